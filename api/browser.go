package api

import (
	"encoding/json"
	"net/http"
	"strings"
)

// simpleTypes are the content types a web page may POST anywhere without
// asking the server first (CORS "simple" requests): an HTML form's, and
// fetch's text/plain.
var simpleTypes = map[string]bool{
	"application/x-www-form-urlencoded": true,
	"multipart/form-data":               true,
	"text/plain":                        true,
}

// RefuseBrowsers answers 403 to the requests a web browser sends and hands
// the rest to h. The API is for the gantry CLI and programs: a page in a
// browser on the same host can reach a loopback port, and one that could
// post a form to the API could submit a job. A browser marks what it sends
// with Origin or Sec-Fetch-* headers, and a form or text/plain body is a
// write no program of gantry's sends; the dashboard (gantryd --http), which
// does serve a browser, guards its own writes and does not go through here.
func RefuseBrowsers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := fromBrowser(r); why != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(Error{Message: "gantry API: refusing a request that looks like a web browser's (" + why +
				"): use the gantry CLI, or the dashboard (gantryd --http) in a browser"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fromBrowser says why r looks like a browser's request, or "".
func fromBrowser(r *http.Request) string {
	for _, h := range []string{"Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode"} {
		if _, ok := r.Header[h]; ok {
			return "it has the header " + h
		}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return ""
	}
	// The essence of the media type, as a browser reads it to decide.
	for _, ct := range r.Header.Values("Content-Type") {
		essence, _, _ := strings.Cut(ct, ";")
		essence = strings.ToLower(strings.TrimSpace(essence))
		if simpleTypes[essence] {
			return "a " + r.Method + " with Content-Type " + essence
		}
	}
	return ""
}
