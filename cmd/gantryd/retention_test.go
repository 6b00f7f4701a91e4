package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsRetention(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		auto     bool
		age      time.Duration
		perImage int
		cache    int64
	}{
		{nil, true, 30 * 24 * time.Hour, 20, 10 << 30},
		{[]string{"--retain", "1d12h", "--retain-per-image", "3", "--build-cache-keep", "512m"}, true, 36 * time.Hour, 3, 512 << 20},
		{[]string{"--retain", "0", "--retain-per-image", "0", "--build-cache-keep", "0"}, true, 0, 0, 0},
		{[]string{"--retain", "off"}, false, 0, 20, 10 << 30},
	} {
		r := parsed(t, tc.args...).Config.Retention
		if r.Auto != tc.auto || r.Age != tc.age || r.PerImage != tc.perImage || r.BuildCacheKeep != tc.cache {
			t.Errorf("ParseFlags(%q): retention %+v, want auto %v, age %v, per image %d, cache %d", tc.args, r, tc.auto, tc.age, tc.perImage, tc.cache)
		}
	}
	for _, tc := range []struct {
		args []string
		say  string
	}{
		{[]string{"--retain", "soon"}, "--retain"},
		{[]string{"--retain", "-1d"}, "--retain"},
		{[]string{"--retain-per-image", "-1"}, "--retain-per-image"},
		{[]string{"--build-cache-keep", "lots"}, "--build-cache-keep"},
	} {
		err := NewMain().ParseFlags(context.Background(), tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("ParseFlags(%q): %v; want an error saying %q", tc.args, err, tc.say)
		}
	}
}
