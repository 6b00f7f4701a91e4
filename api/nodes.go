package api

import (
	"context"
	"net/http"

	"github.com/gantry-ml/gantry"
)

// nodes serves GET /v1/nodes.
func (s *server) nodes(w http.ResponseWriter, r *http.Request) {
	l, err := s.svc.Nodes(r.Context())
	if err != nil {
		s.error(w, r, err)
		return
	}
	if l.Nodes == nil {
		l.Nodes = []gantry.Node{}
	}
	s.json(w, http.StatusOK, l)
}

// Nodes returns the backend's nodes and the jobs training on each. It
// returns ErrUnavailable when the backend does not answer.
func (c *Client) Nodes(ctx context.Context) (gantry.Cluster, error) {
	var l gantry.Cluster
	err := c.getJSON(ctx, "/v1/nodes", nil, &l)
	return l, err
}
