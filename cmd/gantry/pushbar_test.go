package main

import (
	"testing"
	"time"
)

func TestPushBar(t *testing.T) {
	tests := []struct {
		done, total int64
		rate        float64
		want        string
	}{
		{0, 3 << 20, 0, "pushing [>                             ]   0%  0 B / 3.0 MB"},
		{1 << 20, 3 << 20, 1 << 20, "pushing [==========>                   ]  33%  1.0 MB / 3.0 MB  1.0 MB/s"},
		{97312345, 341123456, 12.5 * (1 << 20), "pushing [========>                     ]  28%  92.8 MB / 325.3 MB  12.5 MB/s"},
		{3 << 20, 3 << 20, 1.5 * (1 << 20), "pushing [==============================] 100%  3.0 MB / 3.0 MB  1.5 MB/s"},
		{5 << 30, 4 << 30, 0, "pushing [==============================] 100%  5.00 GB / 4.00 GB"}, // more than the total: full, no further
		{10, 0, 0, "pushing [>                             ]   0%  10 B / 0 B"},                   // total not known yet
		{2048, 4096, 512, "pushing [===============>              ]  50%  2.0 kB / 4.0 kB  512 B/s"},
	}
	for _, tt := range tests {
		if got := pushBar(tt.done, tt.total, tt.rate); got != tt.want {
			t.Errorf("pushBar(%d, %d, %v)\n got %q\nwant %q", tt.done, tt.total, tt.rate, got, tt.want)
		}
	}
}

func TestRate(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name    string
		samples []sample
		want    float64
	}{
		{"none", nil, 0},
		{"one", []sample{{at(0), 100}}, 0},
		{"steady", []sample{{at(0), 0}, {at(1), 1000}, {at(2), 2000}}, 1000},
		{"first to last", []sample{{at(0), 0}, {at(1), 3000}, {at(4), 4000}}, 1000},
		{"same moment", []sample{{at(1), 0}, {at(1), 1000}}, 0},
		{"went back", []sample{{at(0), 1000}, {at(1), 0}}, 0},
		{"stalled", []sample{{at(0), 500}, {at(2), 500}}, 0},
	}
	for _, tt := range tests {
		if got := rate(tt.samples); got != tt.want {
			t.Errorf("%s: rate = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMeter(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	steps := []struct {
		at   time.Time
		done int64
		want float64
	}{
		{at(0), 0, 0},
		{at(1), 1000, 1000},
		{at(2), 3000, 1500},
		{at(6), 7000, 1200}, // from t=1, the newest sample at least 5 s old: 6000 B in 5 s
		{at(7), 7000, 800},  // from t=2: 4000 B in 5 s
		{at(8), 100, 0},     // went back: a new push starts afresh
		{at(9), 1100, 1000},
	}
	var m meter
	for i, s := range steps {
		if got := m.add(s.at, s.done); got != s.want {
			t.Errorf("step %d: add(%v, %d) = %v, want %v", i, s.at.Sub(t0), s.done, got, s.want)
		}
	}
}
