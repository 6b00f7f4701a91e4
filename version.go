package gantry

// Version is gantry's version, set at build time with
// -ldflags "-X github.com/gantry-ml/gantry.Version=...".
var Version = "0.1.0-dev"
