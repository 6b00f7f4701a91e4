package main

// What finished jobs gantryd keeps: the retention policy's flags.

import (
	"flag"
	"fmt"
	"strings"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/daemon"
)

// The retention defaults: a month of jobs, and whatever their age the 20
// newest of each image name; the engine's build cache cut to 10 GiB.
const (
	defaultRetain         = "30d"
	defaultRetainPerImage = 20
	defaultBuildCacheKeep = "10g"
)

// retentionFlags are the flags of the retention policy.
type retentionFlags struct {
	retain         string
	perImage       int
	buildCacheKeep string
}

func (r *retentionFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.retain, "retain", defaultRetain, "remove finished jobs (records, logs, outputs, images) once they are older than this, e.g. 30d, 12h; 0: as soon as they are past --retain-per-image; off: only gantry prune removes jobs")
	fs.IntVar(&r.perImage, "retain-per-image", defaultRetainPerImage, "keep the newest N finished jobs of each image name whatever their age (jobs holding a promoted tag are kept besides)")
	fs.StringVar(&r.buildCacheKeep, "build-cache-keep", defaultBuildCacheKeep, "cut the engine's build cache down to this size after each job, e.g. 10g; 0: leave it")
}

// check fills c's retention policy from the flags.
func (r *retentionFlags) check(c *Config) error {
	p := daemon.Retention{Auto: true, PerImage: r.perImage}
	if strings.EqualFold(r.retain, "off") {
		p.Auto = false
	} else {
		d, err := gantry.ParseAge(r.retain)
		if err != nil {
			return fmt.Errorf("--retain: %w", err)
		}
		p.Age = d
	}
	if r.perImage < 0 {
		return fmt.Errorf("--retain-per-image %d: must be 0 or more", r.perImage)
	}
	n, err := gantry.ParseBytes(r.buildCacheKeep)
	if err != nil {
		return fmt.Errorf("--build-cache-keep: %w", err)
	}
	p.BuildCacheKeep = n
	c.Retention = p
	return nil
}

// retention is the policy as Config holds it.
type retention = daemon.Retention
