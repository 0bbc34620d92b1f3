package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Journal records every step this host takes in a plan, before and after it is
// taken, so a daemon killed at any point knows on restart what was done and
// finishes or undoes it instead of guessing. One JSON line per record, fsynced.
type Journal struct {
	dir string
	mu  sync.Mutex

	// The agent reads its plan's journal at every change of the plan state
	// (dozens a second on a 50-host switch) and it changes a dozen times a
	// plan: Load parses it again only when its size or time changed.
	cacheMu sync.Mutex
	cache   map[string]cachedEntries
}

type cachedEntries struct {
	size int64
	mod  time.Time
	e    *Entries
}

// Record is one line of a plan's journal.
type Record struct {
	At    time.Time         `json:"at"`
	Step  string            `json:"step"`
	Event string            `json:"event"` // "begin" or "done"
	Data  map[string]string `json:"data,omitempty"`
}

// Steps of the host's part, as journaled.
const (
	jPrepare     = "prepare"
	jBackupLive  = "backup-live"
	jStop        = "stop" // the point of no return: from here, a rollback must undo
	jBackupState = "backup-offline"
	jSwap        = "swap"
	jMigrate     = "migrate"
	jStart       = "start"
	jVerify      = "verify"
	jRollback    = "rollback"
	jCleanup     = "cleanup"
	jRemove      = "remove" // bootstrap: peers rm, stop, state cleanup (a point of no return too)
	jRejoin      = "rejoin" // bootstrap: start on the target with --bootstrap to the survivor
)

// OpenJournal uses dir (created if needed) for the journals of every plan.
func OpenJournal(dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating journal folder: %w", err)
	}
	return &Journal{dir: dir}, nil
}

func (j *Journal) path(planID string) string {
	return filepath.Join(j.dir, planID+".jsonl")
}

// Begin records that a step is about to be taken.
func (j *Journal) Begin(planID, step string, data map[string]string) error {
	return j.append(planID, Record{At: time.Now().UTC(), Step: step, Event: "begin", Data: data})
}

// Done records that a step was completed.
func (j *Journal) Done(planID, step string, data map[string]string) error {
	return j.append(planID, Record{At: time.Now().UTC(), Step: step, Event: "done", Data: data})
}

func (j *Journal) append(planID string, r Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding journal record: %w", err)
	}
	f, err := os.OpenFile(j.path(planID), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening journal of plan %s: %w", planID, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("writing journal of plan %s: %w", planID, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing journal of plan %s: %w", planID, err)
	}
	return f.Close()
}

// Entries is what a plan's journal says was begun and done, with the data of
// the last record of each step.
type Entries struct {
	begun map[string]bool
	done  map[string]bool
	data  map[string]map[string]string
}

// Load reads a plan's journal; a missing journal is an empty one. A torn last
// line (the daemon died while writing it) is ignored: its step is not done.
// The Entries returned may be shared with other callers: read them only.
func (j *Journal) Load(planID string) (*Entries, error) {
	fi, err := os.Stat(j.path(planID))
	if os.IsNotExist(err) {
		return newEntries(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading journal of plan %s: %w", planID, err)
	}
	j.cacheMu.Lock()
	c, ok := j.cache[planID]
	j.cacheMu.Unlock()
	if ok && c.size == fi.Size() && c.mod.Equal(fi.ModTime()) {
		return c.e, nil
	}
	e := newEntries()
	if err := j.parse(planID, e); err != nil {
		return nil, err
	}
	// Keyed by the size seen before reading: a line appended meanwhile makes
	// the next Load read again.
	j.cacheMu.Lock()
	if j.cache == nil {
		j.cache = map[string]cachedEntries{}
	}
	j.cache[planID] = cachedEntries{size: fi.Size(), mod: fi.ModTime(), e: e}
	j.cacheMu.Unlock()
	return e, nil
}

func (j *Journal) parse(planID string, e *Entries) error {
	f, err := os.Open(j.path(planID))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading journal of plan %s: %w", planID, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20) // from 4 kB: a journal is a few lines, read at every plan change
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		switch r.Event {
		case "begin":
			e.begun[r.Step] = true
		case "done":
			e.done[r.Step] = true
		}
		if r.Data != nil {
			if e.data[r.Step] == nil {
				e.data[r.Step] = map[string]string{}
			}
			for k, v := range r.Data {
				e.data[r.Step][k] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading journal of plan %s: %w", planID, err)
	}
	return nil
}

func newEntries() *Entries {
	return &Entries{begun: map[string]bool{}, done: map[string]bool{}, data: map[string]map[string]string{}}
}

// Begun reports whether step was begun (done or not).
func (e *Entries) Begun(step string) bool { return e.begun[step] }

// Done reports whether step was completed.
func (e *Entries) Done(step string) bool { return e.done[step] }

// Get returns a value recorded with step.
func (e *Entries) Get(step, key string) string { return e.data[step][key] }

// Plans lists the plan ids that have a journal here.
func (j *Journal) Plans() ([]string, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("listing journals: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if n := e.Name(); filepath.Ext(n) == ".jsonl" {
			ids = append(ids, n[:len(n)-len(".jsonl")])
		}
	}
	return ids, nil
}
