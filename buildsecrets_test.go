package gantry

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidateBuildSecrets(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    BuildSpec
		ok   bool
	}{
		{"none", BuildSpec{}, true},
		{"ids", BuildSpec{Secrets: []string{"token", "pip.conf", "A_B-1"}}, true},
		{"min", BuildSpec{Provenance: ProvenanceMin}, true},
		{"max", BuildSpec{Provenance: ProvenanceMax}, true},
		{"empty id", BuildSpec{Secrets: []string{""}}, false},
		{"slash", BuildSpec{Secrets: []string{"a/b"}}, false},
		{"dot first", BuildSpec{Secrets: []string{".."}}, false},
		{"twice", BuildSpec{Secrets: []string{"a", "a"}}, false},
		{"too many", BuildSpec{Secrets: manyIDs(MaxBuildSecrets + 1)}, false},
		{"provenance", BuildSpec{Provenance: "full"}, false},
	} {
		s := Spec{Build: tc.b}
		err := s.Validate()
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ok %v (else ErrInvalid)", tc.name, err, tc.ok)
		}
	}
}

func manyIDs(n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, "s"+strings.Repeat("x", i))
	}
	return ids
}

func TestCheckBuildSecrets(t *testing.T) {
	big := make([]byte, MaxBuildSecretBytes)
	for _, tc := range []struct {
		name string
		ids  []string
		vals map[string][]byte
		kind error
	}{
		{"none", nil, nil, nil},
		{"exact", []string{"a"}, map[string][]byte{"a": []byte("v")}, nil},
		{"missing", []string{"a"}, nil, ErrInvalid},
		{"extra", nil, map[string][]byte{"a": nil}, ErrInvalid},
		{"one too large", []string{"a"}, map[string][]byte{"a": append(big, 0)}, ErrTooLarge},
		{"too large together", []string{"a", "b", "c", "d", "e"},
			map[string][]byte{"a": big, "b": big, "c": big, "d": big, "e": big}, ErrTooLarge},
	} {
		err := CheckBuildSecrets(tc.ids, tc.vals)
		if tc.kind == nil && err != nil || tc.kind != nil && !errors.Is(err, tc.kind) {
			t.Errorf("%s: CheckBuildSecrets = %v, want %v", tc.name, err, tc.kind)
		}
	}
}

func TestBuildSecretsContext(t *testing.T) {
	if v := BuildSecretsFrom(context.Background()); v != nil {
		t.Errorf("BuildSecretsFrom(empty) = %v", v)
	}
	vals := map[string][]byte{"a": []byte("1")}
	ctx := WithBuildSecrets(context.Background(), vals)
	vals["b"] = nil // the context holds its own copy
	if got := BuildSecretsFrom(ctx); len(got) != 1 || string(got["a"]) != "1" {
		t.Errorf("BuildSecretsFrom = %v, want a=1", got)
	}
}

// With --provenance=min the record names the build arguments without their
// values; with max (the default) it keeps them. Secrets: IDs only.
func TestProvenanceMinElidesBuildArgValues(t *testing.T) {
	j := &Job{ID: "j", Spec: Spec{Build: BuildSpec{
		BuildArgs: map[string]string{"B": "valueB", "A": "valueA"}, Secrets: []string{"token"},
	}}}
	p := NewProvenance(j)
	if p.BuildArgs["A"] != "valueA" || p.BuildArgNames != nil || !slices.Equal(p.BuildSecrets, []string{"token"}) {
		t.Errorf("max: build args %v, names %v, secrets %v; want the values, no names list, token", p.BuildArgs, p.BuildArgNames, p.BuildSecrets)
	}
	j.Spec.Build.Provenance = ProvenanceMin
	p = NewProvenance(j)
	if p.BuildArgs != nil || !slices.Equal(p.BuildArgNames, []string{"A", "B"}) {
		t.Errorf("min: build args %v, names %v; want no values, names [A B]", p.BuildArgs, p.BuildArgNames)
	}
}
