package raftnet

import (
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapHclog lets hashicorp/raft write to the daemon's zap logger. Raft's
// key/value pairs become zap fields; its levels map one to one, with trace
// folded into debug.
type zapHclog struct {
	z       *zap.Logger
	name    string
	implied []any
}

func newHclog(z *zap.Logger) hclog.Logger { return &zapHclog{z: z} }

func (l *zapHclog) Log(level hclog.Level, msg string, args ...any) {
	lvl := zapLevel(level)
	if !l.z.Core().Enabled(lvl) {
		return
	}
	l.z.Log(lvl, msg, fields(args)...)
}

func zapLevel(level hclog.Level) zapcore.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return zapcore.DebugLevel
	case hclog.Warn:
		return zapcore.WarnLevel
	case hclog.Error:
		return zapcore.ErrorLevel
	default:
		return zapcore.InfoLevel
	}
}

// fields turns hclog's alternating keys and values into zap fields.
func fields(args []any) []zap.Field {
	out := make([]zap.Field, 0, len(args)/2+1)
	for i := 0; i+1 < len(args); i += 2 {
		out = append(out, zap.Any(fmt.Sprint(args[i]), value(args[i+1])))
	}
	if len(args)%2 == 1 {
		out = append(out, zap.Any("extra", value(args[len(args)-1])))
	}
	return out
}

// value renders hclog's formatted values as hclog would: raft reports a
// snapshot's progress as hclog.Fmt("%0.2f%%", pct), which zap printed as
// the list ["%0.2f%%",100].
func value(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		return fmt.Sprintf(fmt.Sprint(v[0]), v[1:]...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	case hclog.Quote:
		return fmt.Sprintf("%q", string(v))
	}
	return v
}

func (l *zapHclog) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *zapHclog) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *zapHclog) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *zapHclog) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *zapHclog) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *zapHclog) IsTrace() bool { return l.z.Core().Enabled(zapcore.DebugLevel) }
func (l *zapHclog) IsDebug() bool { return l.z.Core().Enabled(zapcore.DebugLevel) }
func (l *zapHclog) IsInfo() bool  { return l.z.Core().Enabled(zapcore.InfoLevel) }
func (l *zapHclog) IsWarn() bool  { return l.z.Core().Enabled(zapcore.WarnLevel) }
func (l *zapHclog) IsError() bool { return l.z.Core().Enabled(zapcore.ErrorLevel) }

func (l *zapHclog) ImpliedArgs() []any { return l.implied }

func (l *zapHclog) With(args ...any) hclog.Logger {
	return &zapHclog{z: l.z.With(fields(args)...), name: l.name, implied: append(append([]any{}, l.implied...), args...)}
}

func (l *zapHclog) Name() string { return l.name }

func (l *zapHclog) Named(name string) hclog.Logger {
	full := name
	if l.name != "" {
		full = l.name + "." + name
	}
	return &zapHclog{z: l.z.Named(name), name: full, implied: l.implied}
}

func (l *zapHclog) ResetNamed(name string) hclog.Logger {
	return &zapHclog{z: l.z.Named(name), name: name, implied: l.implied}
}

// SetLevel is a no-op: the zap logger's level is the operator's choice.
func (l *zapHclog) SetLevel(hclog.Level) {}

func (l *zapHclog) GetLevel() hclog.Level {
	switch {
	case l.IsDebug():
		return hclog.Debug
	case l.IsInfo():
		return hclog.Info
	case l.IsWarn():
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (l *zapHclog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

func (l *zapHclog) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return stdWriter{l} }

// stdWriter logs each line written by a standard library logger at info.
type stdWriter struct{ l *zapHclog }

func (w stdWriter) Write(p []byte) (int, error) {
	w.l.z.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
