package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/gantry-ml/gantry"
)

func TestParseBuildSecret(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want buildSecret
		err  string
	}{
		{in: "id=token,src=/tmp/t", want: buildSecret{id: "token", src: "/tmp/t"}},
		{in: "id=token,source=/tmp/t,type=file", want: buildSecret{id: "token", src: "/tmp/t"}},
		{in: "id=token,env=TOKEN", want: buildSecret{id: "token", env: "TOKEN"}},
		{in: "type=env,id=TOKEN", want: buildSecret{id: "TOKEN", env: "TOKEN"}},
		{in: "id=token", err: "src=FILE or env=VAR"},
		{in: "src=/tmp/t", err: "give its id=NAME"},
		{in: "id=a/b,src=x", err: "id \"a/b\""},
		{in: "id=t,src=x,env=Y", err: "not both"},
		{in: "id=t,src", err: "want id=NAME"},
		{in: "id=t,mode=0400,src=x", err: "unknown field"},
		{in: "id=t,type=ssh,src=x", err: "type \"ssh\""},
	} {
		got, err := parseBuildSecret(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseBuildSecret(%q) error %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseBuildSecret(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// gantry submit's (and sweep's) --secret flags: the values are read from
// the file or the shell's environment into the context the client sends
// from; the spec names the IDs only. --provenance lands in the spec.
func TestSecretFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sf submitFlags
	fs := pflag.NewFlagSet("submit", pflag.ContinueOnError)
	sf.register(fs)
	if err := fs.Parse([]string{"--secret", "id=token,src=" + file, "--secret", "id=pip,env=PIP_CONF", "--provenance", "min"}); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { return map[string]string{"PIP_CONF": "from-env"}[k], k == "PIP_CONF" }
	spec := sf.spec
	ctx, err := buildSecrets(context.Background(), &spec, sf.secrets, lookup)
	if err != nil {
		t.Fatalf("buildSecrets: %v", err)
	}
	if !slices.Equal(spec.Build.Secrets, []string{"token", "pip"}) || spec.Build.Provenance != gantry.ProvenanceMin {
		t.Errorf("spec build %+v; want secrets [token pip], provenance min", spec.Build)
	}
	vals := gantry.BuildSecretsFrom(ctx)
	if string(vals["token"]) != "from-file\n" || string(vals["pip"]) != "from-env" || len(vals) != 2 {
		t.Errorf("values sent: %d, token ok %v, pip ok %v", len(vals), string(vals["token"]) == "from-file\n", string(vals["pip"]) == "from-env")
	}

	for _, tc := range []struct {
		flags []string
		err   string
	}{
		{[]string{"id=a,env=UNSET"}, "UNSET is not set"},
		{[]string{"id=a,src=" + filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"id=a,src=" + dir}, "directory"},
		{[]string{"id=a,env=PIP_CONF", "id=a,src=" + file}, "given twice"},
	} {
		var s gantry.Spec
		if _, err := buildSecrets(context.Background(), &s, tc.flags, lookup); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("buildSecrets(%q): %v, want an error saying %q", tc.flags, err, tc.err)
		}
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, gantry.MaxBuildSecretBytes+1), 0o600)
	var s gantry.Spec
	if _, err := buildSecrets(context.Background(), &s, []string{"id=a,src=" + big}, lookup); err == nil || !strings.Contains(err.Error(), "over the 64") {
		t.Errorf("buildSecrets(a file over the bound): %v, want refused", err)
	}
}
