package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

func TestWriteSeries(t *testing.T) {
	tests := []struct {
		name string
		s    gantry.Series
		want string
	}{
		{
			name: "two metrics, five epochs",
			s: gantry.Series{
				"loss":     {{Step: 1, Value: 0.9}, {Step: 2, Value: 0.5}, {Step: 3, Value: 0.31}, {Step: 4, Value: 0.2}, {Step: 5, Value: 0.125}},
				"accuracy": {{Step: 1, Value: 0.5}, {Step: 2, Value: 0.7}, {Step: 3, Value: 0.8}, {Step: 4, Value: 0.9}, {Step: 5, Value: 0.9667}},
			},
			want: `
STEP   accuracy   loss
1      0.5        0.9
2      0.7        0.5
3      0.8        0.31
4      0.9        0.2
5      0.9667     0.125
`,
		},
		{
			name: "steps apart, and a step given twice",
			s: gantry.Series{
				"val_loss": {{Step: 10, Value: 1.0 / 3}, {Step: 20, Value: 1e-7}},
				"lr":       {{Step: 0, Value: 0.001}, {Step: 10, Value: 0.01}, {Step: 10, Value: 0.02}},
			},
			want: `
STEP   lr      val_loss
0      0.001   -
10     0.01    0.333333
10     0.02    -
20     -       1e-07
`,
		},
		{
			name: "one metric",
			s:    gantry.Series{"loss": {{Step: 0, Value: 2}}},
			want: `
STEP   loss
0      2
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeSeries(&buf, tc.s); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(strings.Fields(strings.ReplaceAll(buf.String(), "\n", " | ")), " ")
			want := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimPrefix(tc.want, "\n"), "\n", " | ")), " ")
			if got != want {
				t.Errorf("got:\n%s\nwant:\n%s", buf.String(), strings.TrimPrefix(tc.want, "\n"))
			}
		})
	}
}
