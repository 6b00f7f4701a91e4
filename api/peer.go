package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sys/unix"
)

// Peer is who sent a request: over the unix socket, the process's uid and
// pid (SO_PEERCRED); over TLS, the client certificate's subject.
type Peer struct {
	UID, PID int
	Subject  string
}

type peerKey struct{}

// ConnContext is an http.Server ConnContext that records a unix socket
// peer's credentials, for Logged to report.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitConn); ok {
		c = lc.Conn
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, Peer{UID: int(cred.Uid), PID: int(cred.Pid)})
}

// PeerOf returns the peer of a request, as far as it is known.
func PeerOf(r *http.Request) Peer {
	p, _ := r.Context().Value(peerKey{}).(Peer)
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		p.Subject = r.TLS.PeerCertificates[0].Subject.String()
	}
	return p
}

// Logged logs every request with its peer, status and duration.
func Logged(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		p := PeerOf(r)
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start).Round(time.Microsecond)}
		switch {
		case p.Subject != "":
			attrs = append(attrs, "peer", p.Subject)
		case p.PID != 0:
			attrs = append(attrs, "uid", p.UID, "pid", p.PID)
		default:
			attrs = append(attrs, "remote", r.RemoteAddr)
		}
		log.Info("request", attrs...)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
