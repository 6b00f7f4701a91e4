package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/gantry-ml/gantry"
)

// metrics serves GET /v1/jobs/{id}/metrics.
func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	series, err := s.svc.Metrics(r.Context(), r.PathValue("id"), r.URL.Query().Get("name"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	if series == nil {
		series = gantry.Series{}
	}
	s.json(w, http.StatusOK, series)
}

// Metrics returns job id's metric series, or with name only that metric's
// (empty while the job has reported none). It returns ErrNotFound for an
// unknown job, ErrInvalid for a name no metric may have.
func (c *Client) Metrics(ctx context.Context, id, name string) (gantry.Series, error) {
	var q url.Values
	if name != "" {
		q = url.Values{"name": {name}}
	}
	s := gantry.Series{}
	if err := c.getJSON(ctx, "/v1/jobs/"+url.PathEscape(id)+"/metrics", q, &s); err != nil {
		return nil, err
	}
	return s, nil
}
