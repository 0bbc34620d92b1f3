package raftnet

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestHclogAdapter(t *testing.T) {
	tests := []struct {
		name   string
		level  hclog.Level
		want   zapcore.Level
		args   []any
		fields map[string]any
	}{
		{"trace folds into debug", hclog.Trace, zapcore.DebugLevel, nil, map[string]any{}},
		{"info with pairs", hclog.Info, zapcore.InfoLevel, []any{"term", 3, "peer", "x"}, map[string]any{"term": int64(3), "peer": "x"}},
		{"warn", hclog.Warn, zapcore.WarnLevel, nil, map[string]any{}},
		{"error with odd argument", hclog.Error, zapcore.ErrorLevel, []any{"k", "v", "lost"}, map[string]any{"k": "v", "extra": "lost"}},
		{"formatted values", hclog.Info, zapcore.InfoLevel,
			[]any{"percent-complete", hclog.Fmt("%0.2f%%", 37.5), "flags", hclog.Hex(255), "mode", hclog.Octal(8), "bits", hclog.Binary(5), "name", hclog.Quote("a b")},
			map[string]any{"percent-complete": "37.50%", "flags": "0xff", "mode": "010", "bits": "0b101", "name": `"a b"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			l := newHclog(zap.New(core)).Named("raft")
			l.Log(tc.level, "msg", tc.args...)
			entries := logs.All()
			if len(entries) != 1 {
				t.Fatalf("%d entries logged, want 1", len(entries))
			}
			e := entries[0]
			if e.Level != tc.want || e.LoggerName != "raft" {
				t.Fatalf("logged at %v by %q, want %v by raft", e.Level, e.LoggerName, tc.want)
			}
			got := e.ContextMap()
			for k, v := range tc.fields {
				if got[k] != v {
					t.Fatalf("field %s = %#v, want %#v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestHclogAdapterRespectsLevel(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	l := newHclog(zap.New(core))
	l.Debug("hidden")
	l.Info("hidden")
	l.Warn("shown")
	if logs.Len() != 1 || l.IsDebug() || l.IsInfo() || !l.IsWarn() || l.GetLevel() != hclog.Warn {
		t.Fatalf("level handling wrong: %d entries, GetLevel %v", logs.Len(), l.GetLevel())
	}
	l.With("a", 1).Warn("with")
	if got := logs.All()[1].ContextMap()["a"]; got != int64(1) {
		t.Fatalf("With field = %#v", got)
	}
}
