package integration

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// hubAccess is one entry of a token's "access" claim (distribution's
// token.ResourceActions).
type hubAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// serveToken plays auth.docker.io's /token: it checks the basic auth
// (or, POSTed, the OAuth2 password grant docker login may use) against the
// box's users, grants each requested repository scope what the user may
// do there (pull and push in their own namespace, pull in library/), and
// answers a JWT in distribution 2.8's format, signed with the box's token
// key, whose certificate (x5c) chains to the registry's rootcertbundle.
// Anonymous requests get the public scopes; wrong credentials get 401.
func (b *hubBox) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	user, pass, authed := r.BasicAuth()
	scopes := r.Form["scope"]
	if r.Method == http.MethodPost && r.PostForm.Get("grant_type") == "password" {
		user, pass, authed = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		scopes = strings.Fields(r.PostForm.Get("scope"))
	}
	if r.Form.Get("service") != hubService {
		http.Error(w, `{"details":"unknown service"}`, http.StatusBadRequest)
		return
	}
	if authed && (b.users[user] == "" || b.users[user] != pass) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"details":"incorrect username or password"}`)
		return
	}
	if !authed {
		user = ""
	}
	access := []hubAccess{}
	for _, s := range scopes {
		a, ok := grant(user, s)
		b.mu.Lock()
		b.grants = append(b.grants, fmt.Sprintf("%q %s -> %v", user, s, a.Actions))
		b.mu.Unlock()
		if ok {
			access = append(access, a)
		}
	}
	tok, err := b.token(user, access)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": tok, "access_token": tok, "expires_in": 300,
		"issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

// grant returns what user may do of what scope ("repository:NAME:ACTIONS")
// asks, and false when it is nothing.
func grant(user, scope string) (hubAccess, bool) {
	typ, rest, ok := strings.Cut(scope, ":")
	i := strings.LastIndex(rest, ":")
	if !ok || i < 0 || typ != "repository" {
		return hubAccess{}, false
	}
	name, asked := rest[:i], strings.Split(rest[i+1:], ",")
	var may []string
	switch {
	case user != "" && strings.HasPrefix(name, user+"/"):
		may = []string{"pull", "push"}
	case strings.HasPrefix(name, "library/"):
		may = []string{"pull"}
	}
	a := hubAccess{Type: typ, Name: name, Actions: []string{}}
	for _, act := range asked {
		if slices.Contains(may, act) && !slices.Contains(a.Actions, act) {
			a.Actions = append(a.Actions, act)
		}
	}
	return a, len(a.Actions) > 0
}

// token signs a JWT for user with access (ES256, the signing certificate
// in the x5c header).
func (b *hubBox) token(user string, access []hubAccess) (string, error) {
	now := time.Now()
	var jti [8]byte
	rand.Read(jti[:])
	header, err := json.Marshal(map[string]any{
		"typ": "JWT", "alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(b.signCert)},
	})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"iss": hubIssuer, "sub": user, "aud": hubService,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-10 * time.Second).Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti[:]), "access": access,
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, b.signKey, sum[:])
	if err != nil {
		return "", err
	}
	// JWS ES256: R and S, 32 bytes each, big-endian.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig), nil
}

// grantCount returns how many scopes the box's token service answered.
func (b *hubBox) grantCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.grants)
}

// grantsSince returns the grants answered after the first n.
func (b *hubBox) grantsSince(n int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.grants[n:])
}
