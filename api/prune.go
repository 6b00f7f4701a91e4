package api

// Prune: POST /v1/prune takes a gantry.PruneOptions as its JSON body (an
// empty body: gantryd's retention policy) and answers 200 with the
// gantry.PruneReport: every job, file and image removed (with dry_run,
// that would be) and the bytes freed. A removed job answers 404 after.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/gantry-ml/gantry"
)

// PruneService is what the API serves of pruning; daemon.Daemon
// implements it, as part of Service.
type PruneService interface {
	Prune(ctx context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error)
}

func (s *server) prune(w http.ResponseWriter, r *http.Request) {
	o, err := decodePrune(r.Body)
	if err != nil {
		s.error(w, r, err)
		return
	}
	rep, err := s.svc.Prune(r.Context(), o)
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.json(w, http.StatusOK, rep)
}

// decodePrune reads a prune's options: ErrInvalid or ErrTooLarge.
func decodePrune(body io.Reader) (gantry.PruneOptions, error) {
	var o gantry.PruneOptions
	data, err := io.ReadAll(io.LimitReader(body, MaxSpecBytes+1))
	if err != nil {
		return o, gantry.Errorf(gantry.ErrInvalid, "prune request: %v", err)
	}
	if len(data) > MaxSpecBytes {
		return o, gantry.Errorf(gantry.ErrTooLarge, "prune request: over %d bytes", MaxSpecBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return o, nil
	}
	if err := decodeStrict(data, &o, "prune request"); err != nil {
		return gantry.PruneOptions{}, err
	}
	if (o.OlderThan != nil && *o.OlderThan < 0) || (o.Keep != nil && *o.Keep < 0) {
		return gantry.PruneOptions{}, gantry.Errorf(gantry.ErrInvalid, "prune request: older_than and keep must not be negative")
	}
	return o, nil
}

// Prune asks gantryd to remove finished jobs as o says, and returns what
// it removed (with o.DryRun, what it would).
func (c *Client) Prune(ctx context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/prune", nil, bytes.NewReader(data), "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rep gantry.PruneReport
	return &rep, json.NewDecoder(resp.Body).Decode(&rep)
}
