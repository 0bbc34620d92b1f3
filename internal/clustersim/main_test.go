package clustersim_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// builds holds the simulator binaries compiled once for this test binary.
type builds struct {
	dir string
}

var testBuilds builds // written once in TestMain before any test runs

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clustersim-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBuilds.dir = dir
	if err := prebuild(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bins builds (or reuses) the binaries of one release and fault.
func bins(t *testing.T, version, fault string) simtest.Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := simtest.Build(ctx, testBuilds.dir, simtest.BuildSpec{Version: version, Fault: fault})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// specs are every build the tests use, compiled concurrently up front.
var specs = []simtest.BuildSpec{
	{Version: "1.1.6"}, {Version: "1.0.8"}, {Version: "0.14.5"}, {Version: "0.11.0"},
	{Version: "1.1.6", Fault: "fail-start"},
}

func prebuild(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = simtest.Build(ctx, dir, s)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
