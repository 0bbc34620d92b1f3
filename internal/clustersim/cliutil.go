package clustersim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// IO is where a command reads and writes.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// flagSpec names one flag and its aliases; Bool flags take no value.
type flagSpec struct {
	Names []string
	Bool  bool
}

// parseFlags reads flags (--name v, --name=v, -n v, bools) mixed with
// positional arguments, the lenient way urfave/cli users expect.
func parseFlags(args []string, specs []flagSpec) (map[string]string, []string, error) {
	byName := map[string]flagSpec{}
	for _, s := range specs {
		for _, n := range s.Names {
			byName[n] = s
		}
	}
	vals := map[string]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		s, ok := byName[name]
		if !ok {
			return nil, nil, fmt.Errorf("flag provided but not defined: -%s", name)
		}
		key := s.Names[0]
		switch {
		case s.Bool:
			vals[key] = "true"
		case hasVal:
			vals[key] = val
		case i+1 < len(args):
			i++
			vals[key] = args[i]
		default:
			return nil, nil, fmt.Errorf("flag needs an argument: -%s", name)
		}
	}
	return vals, pos, nil
}

// newLogger writes logs like the real daemon's: time, level, component, message.
func newLogger(w io.Writer, level string) *zap.Logger {
	enc := zapcore.EncoderConfig{
		TimeKey: "T", LevelKey: "L", NameKey: "N", MessageKey: "M",
		EncodeTime: func(t time.Time, pe zapcore.PrimitiveArrayEncoder) {
			pe.AppendString(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		},
		EncodeLevel:    zapcore.CapitalLevelEncoder,
		EncodeName:     zapcore.FullNameEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
	}
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), logLevel(level))
	return zap.New(core)
}

// logLevel reads a --loglevel value: an overall level, or a list of them
// with component-wise ones ("info,cluster:debug"). The simulator logs as
// one component, so the most verbose level named anywhere applies; an
// empty or unknown value is info.
func logLevel(spec string) zapcore.Level {
	lvl := zapcore.InfoLevel
	for i, part := range strings.Split(spec, ",") {
		if _, l, ok := strings.Cut(part, ":"); ok {
			part = l
		}
		var l zapcore.Level
		switch strings.ToLower(strings.TrimSpace(part)) {
		case "debug":
			l = zapcore.DebugLevel
		case "info":
			l = zapcore.InfoLevel
		case "warning", "warn":
			l = zapcore.WarnLevel
		case "error", "critical", "fatal", "panic", "dpanic":
			l = zapcore.ErrorLevel
		default:
			continue
		}
		if i == 0 || l < lvl {
			lvl = l
		}
	}
	return lvl
}

// confirm asks a yes/no question on stdin; anything but y/yes is no.
func confirm(io IO, question string) bool {
	fmt.Fprintf(io.Stdout, "%s [y/n]: ", question)
	if io.Stdin == nil {
		return false
	}
	line, _ := bufio.NewReader(io.Stdin).ReadString('\n')
	ans := strings.ToLower(strings.TrimSpace(line))
	return ans == "y" || ans == "yes"
}

func envDuration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	if ms, err := time.ParseDuration(v + "ms"); err == nil {
		return ms
	}
	return def
}
