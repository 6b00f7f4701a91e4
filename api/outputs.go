package api

import "net/http"

// outputs serves GET /v1/jobs/{id}/outputs: the tar stream is the
// service's to write; a failure mid-way breaks the stream off.
func (s *server) outputs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	// Fail before the first byte, so that the error gets its status.
	if _, err := s.svc.Outputs(r.Context(), id); err != nil {
		s.error(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	if err := s.svc.WriteOutputs(r.Context(), id, w); err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("outputs", "job", id, "err", err)
		}
		// Break the stream off: a tar cut at an entry's end would read as
		// complete.
		panic(http.ErrAbortHandler)
	}
}
