// Package dashboard serves gantry's web dashboard: one page, built into the
// binary, that shows the job list with live states and the job that holds
// each promoted tag, a job's record, live log and metric curves, the
// accuracy of successive jobs of each image, and sweeps with their
// leaderboards. The page reads the API (the same handler the unix socket
// serves) and follows its event stream, so it updates without reloading.
//
// The dashboard is read-only: it forwards only GET requests to the API. With
// Credentials, every request needs them (HTTP basic auth), and cancel is
// allowed too. Nothing else gantry knows, registry credentials least of all,
// is served: the API does not hold them, and the dashboard adds nothing but
// its own files.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"io/fs"
	"net/http"
	"time"
)

//go:embed static
var static embed.FS

// Credentials are the user and password the dashboard asks for.
type Credentials struct{ User, Password string }

// csp allows the page nothing from anywhere but its own origin.
const csp = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler returns the dashboard's handler. api is gantry's API handler; only
// its reads (and, with cred, cancel) are reachable through the dashboard.
// metrics, when not nil, serves /metrics. cred nil makes the dashboard
// read-only and open to whoever reaches the listener.
func Handler(api http.Handler, metrics http.Handler, cred *Credentials) http.Handler {
	assets, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	index, err := fs.ReadFile(assets, "index.html")
	if err != nil {
		panic(err)
	}
	mode := "read-only"
	if cred != nil {
		mode = "cancel"
	}
	index = bytes.ReplaceAll(index, []byte("{{mode}}"), []byte(mode))

	files := http.FileServerFS(assets)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	mux.Handle("GET /_ping", forward(api))
	mux.Handle("GET /v1/", forward(api))
	if cred != nil {
		mux.Handle("POST /v1/jobs/{id}/cancel", forward(api))
	}
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	// Every other method on every path: submit, push and the rest of the
	// API's writes are not the dashboard's to offer.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
	})

	// A page elsewhere must not make a logged-in browser cancel a job.
	var h http.Handler = http.NewCrossOriginProtection().Handler(mux)
	if cred != nil {
		h = requireAuth(*cred, h)
	}
	return secure(h)
}

// forward hands r to the API without the dashboard's own credentials.
func forward(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			r = r.Clone(r.Context())
			r.Header.Del("Authorization")
		}
		api.ServeHTTP(w, r)
	})
}

// secure sets the headers that keep the page from being framed, sniffed or
// made to load anything from elsewhere. It does not wrap w, so that the API's
// streams can still flush.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// requireAuth answers 401 to every request without cred. The hashes make the
// comparison take the same time whatever the lengths.
func requireAuth(cred Credentials, next http.Handler) http.Handler {
	wantUser, wantPass := sha256.Sum256([]byte(cred.User)), sha256.Sum256([]byte(cred.Password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		if !ok || subtle.ConstantTimeCompare(u[:], wantUser[:])&subtle.ConstantTimeCompare(p[:], wantPass[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="gantry", charset="UTF-8"`)
			http.Error(w, "gantry dashboard: log in with the user and password gantryd was given", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
