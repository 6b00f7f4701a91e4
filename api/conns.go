package api

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// refuseTimeout bounds the answer to a connection over the limit, and
// maxRefusing how many such answers are under way at once (past it, a
// connection over the limit is closed unanswered).
const (
	refuseTimeout = 5 * time.Second
	maxRefusing   = 32
)

// LimitListener returns a listener that keeps at most n of ln's
// connections open (n < 1 means 1). A connection that comes when n are
// open closes the one idle longest (accepted but silent, or kept alive
// between requests) to make room: idle connections cannot crowd out a new
// client. When none is idle, the newcomer is answered 503 and closed. A
// connection that is sending a request or receiving an answer (a followed
// log or event stream too) is never closed to make room. With cfg, the
// connections speak TLS, counted from before their handshake. The server
// needs ConnState as its hook to tell idle connections from busy ones.
func LimitListener(ln net.Listener, n int, cfg *tls.Config) net.Listener {
	l := &limitListener{
		Listener: ln, max: max(n, 1), cfg: cfg,
		conns:    map[*limitConn]struct{}{},
		refusing: make(chan struct{}, maxRefusing),
	}
	if cfg != nil {
		return tls.NewListener(l, cfg)
	}
	return l
}

type limitListener struct {
	net.Listener
	max      int
	cfg      *tls.Config
	refusing chan struct{} // a token per answer to a refused connection

	mu    sync.Mutex
	conns map[*limitConn]struct{}
	seq   atomic.Uint64 // orders the moments connections fall idle
}

// limitConn is a connection the limit counts.
type limitConn struct {
	net.Conn
	l *limitListener
	// idle is true from accept or the end of an answer until the first
	// byte of the next request; since is when it fell idle.
	idle  atomic.Bool
	since atomic.Uint64
	once  sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc, victim := l.admit(c)
		if victim != nil {
			victim.Close()
		}
		if lc != nil {
			return lc, nil
		}
		l.refuse(c)
	}
}

// admit counts c in, and returns the idle connection it displaces; or nil
// when the limit is reached and no connection is idle.
func (l *limitListener) admit(c net.Conn) (admitted, victim *limitConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		for o := range l.conns {
			if o.idle.Load() && (victim == nil || o.since.Load() < victim.since.Load()) {
				victim = o
			}
		}
		if victim == nil {
			return nil, nil
		}
		delete(l.conns, victim)
	}
	lc := &limitConn{Conn: c, l: l}
	lc.fallIdle()
	l.conns[lc] = struct{}{}
	return lc, victim
}

func (c *limitConn) fallIdle() {
	c.since.Store(c.l.seq.Add(1))
	c.idle.Store(true)
}

// Read marks the connection busy once a request's first byte has come.
func (c *limitConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.idle.Load() {
		c.idle.Store(false)
	}
	return n, err
}

// Close closes the connection and frees its place.
func (c *limitConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// ConnState is the http.Server ConnState hook LimitListener needs: a
// connection is idle while it waits for its next request, busy while it
// reads one and answers.
func ConnState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	switch s {
	case http.StateIdle:
		lc.fallIdle()
	case http.StateActive:
		lc.idle.Store(false)
	case http.StateHijacked, http.StateClosed:
		lc.once.Do(func() {
			lc.l.mu.Lock()
			delete(lc.l.conns, lc)
			lc.l.mu.Unlock()
		})
	}
}

// refuse answers c 503 and closes it, in the background; when too many
// answers are under way already, it just closes c.
func (l *limitListener) refuse(c net.Conn) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		answerBusy(c, l.cfg, l.max)
	}()
}

// answerBusy reads c's request (so that the client, which is sending it,
// reads the answer) and answers 503.
func answerBusy(c net.Conn, cfg *tls.Config, max int) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseTimeout))
	rw := c
	if cfg != nil {
		rw = tls.Server(c, cfg)
	}
	http.ReadRequest(bufio.NewReader(io.LimitReader(rw, 64<<10)))
	body, _ := json.Marshal(Error{
		Message: fmt.Sprintf("gantryd is busy: all %d connections of this listener are answering requests (see gantryd --max-connections); try again", max),
		Kind:    "unavailable",
	})
	fmt.Fprintf(rw, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s", len(body), body)
	// Let the client read the answer before the close: a close with its
	// request unread would reset the connection.
	if cw, ok := rw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(rw, 1<<20))
}
