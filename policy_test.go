package gantry

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPolicyCheck(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		want string // "" when the policy is sound
	}{
		{name: "the default: nothing", p: Policy{}},
		{name: "a contained capability", p: Policy{CapAdd: []string{"net_bind_service"}}},
		{name: "SYS_ADMIN without the root flag", p: Policy{CapAdd: []string{"SYS_ADMIN"}}, want: "--allow-host-root"},
		{name: "DAC_READ_SEARCH without the root flag", p: Policy{CapAdd: []string{"CAP_DAC_READ_SEARCH"}}, want: "--allow-host-root"},
		{name: "NET_RAW without the root flag", p: Policy{CapAdd: []string{"NET_RAW"}}, want: "--allow-host-root"},
		{name: "SYS_ADMIN with the root flag", p: Policy{CapAdd: []string{"SYS_ADMIN"}, HostRoot: true}},
		{name: "no such capability", p: Policy{CapAdd: []string{"FLY"}}, want: "--allow-cap"},
		{name: "ALL", p: Policy{CapAdd: []string{"ALL"}}, want: "--allow-cap"},
		{name: "a bridge network", p: Policy{Networks: []string{"bridge"}}},
		{name: "host without the root flag", p: Policy{Networks: []string{"host"}}, want: "--allow-host-root"},
		{name: "host with the root flag", p: Policy{Networks: []string{"host"}, HostRoot: true}},
		{name: "container: mode", p: Policy{Networks: []string{"container:abc"}}, want: "network name"},
		{name: "negative queue", p: Policy{MaxQueue: -1}, want: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check: %v, want an error saying %q", err, tc.want)
			case err != nil && !errors.Is(err, ErrInvalid):
				t.Errorf("Check: %v is not of kind ErrInvalid", err)
			}
		})
	}
}

func TestEveryCapabilityIsClassified(t *testing.T) {
	// The ones a finding showed hand out root, or reach past the sandbox.
	for _, c := range []string{"SYS_ADMIN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "SYS_MODULE", "SYS_PTRACE", "NET_ADMIN", "NET_RAW", "SYS_RAWIO", "BPF", "PERFMON", "SYS_NICE", "SYS_RESOURCE", "MAC_ADMIN", "SYS_TIME"} {
		if !RootCapability(c) {
			t.Errorf("RootCapability(%s) = false, want true", c)
		}
	}
	for _, c := range containedCapabilities {
		if _, err := NormalizeCapability(c); err != nil {
			t.Errorf("contained capability %s is not a capability: %v", c, err)
		}
	}
}

func TestPolicyApply(t *testing.T) {
	p := Policy{
		Resources: Resources{Memory: 2 << 30, CPUs: 2, PidsLimit: 1024, LogBytes: 64 << 20},
		Timeouts:  Timeouts{Build: Duration(30 * time.Minute), Train: Duration(2 * time.Hour)},
		CapAdd:    []string{"NET_BIND_SERVICE"},
		Networks:  []string{"bridge"},
	}
	tests := []struct {
		name string
		spec Spec
		want string // the flag the refusal names; "" when allowed
	}{
		{name: "nothing asked", spec: Spec{}},
		{name: "less than the ceilings", spec: Spec{Resources: Resources{Memory: 1 << 30, CPUs: 1, PidsLimit: 64, LogBytes: 1 << 20}}},
		{name: "exactly the ceilings", spec: Spec{Resources: Resources{Memory: 2 << 30, CPUs: 2, PidsLimit: 1024}}},
		{name: "more memory", spec: Spec{Resources: Resources{Memory: 3 << 30}}, want: "--memory"},
		{name: "more cpus", spec: Spec{Resources: Resources{CPUs: 2.5}}, want: "--cpus"},
		{name: "more pids", spec: Spec{Resources: Resources{PidsLimit: 100000}}, want: "--pids-limit"},
		{name: "more log", spec: Spec{Resources: Resources{LogBytes: 1 << 30}}, want: "--max-log"},
		{name: "a longer training", spec: Spec{Timeouts: Timeouts{Train: Duration(3 * time.Hour)}}, want: "--train-timeout"},
		{name: "any push timeout: no ceiling", spec: Spec{Timeouts: Timeouts{Push: Duration(100 * time.Hour)}}},
		{name: "an allowed capability", spec: Spec{Sandbox: Sandbox{CapAdd: []string{"NET_BIND_SERVICE"}}}},
		{name: "SYS_ADMIN", spec: Spec{Sandbox: Sandbox{CapAdd: []string{"SYS_ADMIN"}}}, want: "--allow-host-root"},
		{name: "CHOWN, contained but not listed", spec: Spec{Sandbox: Sandbox{CapAdd: []string{"CHOWN"}}}, want: "--allow-cap CHOWN"},
		{name: "the allowed network", spec: Spec{Sandbox: Sandbox{Network: "bridge"}}},
		{name: "no network, said outright", spec: Spec{Sandbox: Sandbox{Network: "none"}}},
		{name: "the host network", spec: Spec{Sandbox: Sandbox{Network: "host"}}, want: "--allow-network"},
		{name: "another network", spec: Spec{Sandbox: Sandbox{Network: "internal"}}, want: "--allow-network"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			before := spec.Resources
			err := p.Apply(&spec)
			if tc.want != "" {
				if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Apply: %v, want ErrForbidden naming %q", err, tc.want)
				}
				if spec.Resources != before {
					t.Errorf("a refused spec was changed: %+v, was %+v", spec.Resources, before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v, want nil", err)
			}
			r := spec.Resources
			if r.Memory == 0 || r.CPUs == 0 || r.PidsLimit == 0 || r.LogBytes == 0 || spec.Timeouts.Train == 0 {
				t.Errorf("limits left unset %+v %+v: want the policy's where the job asked nothing", r, spec.Timeouts)
			}
		})
	}
}

func TestFormatBytesReadsBack(t *testing.T) {
	for _, n := range []int64{0, 100, 1 << 10, 1536, 64 << 20, 2 << 30, 8 << 30} {
		got, err := ParseBytes(FormatBytes(n))
		if err != nil || got != n {
			t.Errorf("ParseBytes(FormatBytes(%d) = %q) = %d, %v", n, FormatBytes(n), got, err)
		}
	}
}
