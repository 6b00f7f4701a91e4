// Package lab starts the real infrastructure that gantry's scale-out tests
// and benchmarks run against, on this one machine: a Docker Swarm of several
// dockerd "hosts", each in a network namespace of its own, with a registry
// the nodes pull from (swarm.go), and a standalone buildkitd built from the
// Go module proxy at go.mod's version (buildkitd.go). Whatever a lab changes
// on the machine (namespaces, links, processes, directories) its Close
// restores. Labs send traffic only to loopback and to the namespaces they
// created.
package lab
