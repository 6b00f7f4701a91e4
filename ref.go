package gantry

import (
	"github.com/google/go-containerregistry/pkg/name"
)

// ParseRef checks that s is a reference an image can be pushed to: a tag
// (":latest" when none is given), not a digest. It is the one reading of a
// reference in gantry: go-containerregistry's, so "user/repo" is Docker
// Hub's "index.docker.io/user/repo", as docker push reads it. It returns
// ErrInvalid.
func ParseRef(s string) (name.Tag, error) {
	t, err := name.NewTag(s, name.StrictValidation)
	if err != nil {
		// StrictValidation refuses a missing tag; a user means ":latest".
		if t2, err2 := name.NewTag(s); err2 == nil {
			return t2, nil
		}
		return name.Tag{}, Errorf(ErrInvalid, "%q is not an image reference to push to (want [REGISTRY/]NAME[:TAG]): %v", s, err)
	}
	return t, nil
}

// Repository is the repository reference ref is in, fully qualified the
// way go-containerregistry names it ("127.0.0.1:5000/iris",
// "index.docker.io/user/repo"): jobs, history and promotions are grouped by
// it. A reference that does not parse is its own repository.
func Repository(ref string) string {
	if t, err := ParseRef(ref); err == nil {
		return t.Context().Name()
	}
	if r, err := name.NewRepository(ref); err == nil {
		return r.Name()
	}
	return ref
}
