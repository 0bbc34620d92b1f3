// Package metrics exposes a daemon to Prometheus (/metrics) and to health
// checks (/healthz): the plan's phase, each host's step, step durations,
// backups, the last successful upgrade, and refused announcements. It uses
// prometheus/client_golang, the standard client, rather than hand-written
// exposition.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/statebackup"
)

// Source is the daemon as the metrics see it.
type Source interface {
	State() *plan.State
	Leader() string
	Members() int
	// Voters is how many members vote in the raft group.
	Voters() int
	Backups() ([]*statebackup.Manifest, error)
}

// Metrics holds the collectors of one daemon.
type Metrics struct {
	src      Source
	reg      *prometheus.Registry
	rejected *prometheus.CounterVec
	steps    *prometheus.HistogramVec
	// Artifact sharing (coordination/artifacts): bytes staged by where they
	// came from, and bytes served to other daemons.
	artifactFetched  *prometheus.CounterVec
	artifactServed   prometheus.Counter
	artifactAnswered *prometheus.CounterVec

	mu   sync.Mutex
	last map[string]stepSeen // plan|host -> step seen last, for durations
}

type stepSeen struct {
	step  plan.Step
	since time.Time
}

// New builds the registry.
func New(src Source) *Metrics {
	m := &Metrics{src: src, reg: prometheus.NewRegistry(), last: map[string]stepSeen{},
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upgraded_announcements_rejected_total",
			Help: "Announcements and approvals refused, by reason."}, []string{"reason"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "upgraded_step_duration_seconds",
			Help:    "How long hosts spent in each step of a plan.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900}}, []string{"step"}),
		artifactFetched: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upgraded_artifact_fetched_bytes_total",
			Help: "Artifact bytes staged on this host, by where they came from: source, peer (another daemon) or local (a path)."}, []string{"from"}),
		artifactServed: prometheus.NewCounter(prometheus.CounterOpts{Name: "upgraded_artifact_served_bytes_total",
			Help: "Artifact bytes this daemon served to other daemons."}),
		artifactAnswered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upgraded_artifact_requests_total",
			Help: "Artifact requests of other daemons this daemon answered, by answer: ok (served), not_held, fetching, busy, failed, refused, bad_request."}, []string{"answer"}),
	}
	m.reg.MustRegister(m.rejected, m.steps, m.artifactFetched, m.artifactServed, m.artifactAnswered, collector{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Rejected counts one refused announcement or approval.
func (m *Metrics) Rejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// ArtifactFetched counts n artifact bytes staged from "source", "peer" or "local".
func (m *Metrics) ArtifactFetched(from string, n int64) {
	m.artifactFetched.WithLabelValues(from).Add(float64(n))
}

// ArtifactServed counts n artifact bytes served to another daemon.
func (m *Metrics) ArtifactServed(n int64) { m.artifactServed.Add(float64(n)) }

// ArtifactAnswered counts one artifact request answered, by its answer.
func (m *Metrics) ArtifactAnswered(code string) { m.artifactAnswered.WithLabelValues(code).Inc() }

// Observe feeds step durations from every applied plan state (plan.FSM.Observe).
func (m *Metrics) Observe(s *plan.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range s.Plans {
		if p.Phase.Terminal() && p.ID != s.Last {
			continue
		}
		for id, h := range p.Hosts {
			k := p.ID + "|" + id
			prev, ok := m.last[k]
			if ok && prev.step != h.Step && !h.StepStarted.Before(prev.since) {
				m.steps.WithLabelValues(string(prev.step)).Observe(h.StepStarted.Sub(prev.since).Seconds())
			}
			if !ok || prev.step != h.Step {
				m.last[k] = stepSeen{step: h.Step, since: h.StepStarted}
			}
		}
	}
}

var (
	descPhase   = prometheus.NewDesc("upgraded_plan_phase", "1 for the phase the current (or last) plan is in.", []string{"plan", "version", "procedure", "phase"}, nil)
	descStep    = prometheus.NewDesc("upgraded_host_step", "1 for the step each host of the current (or last) plan is in.", []string{"plan", "host", "step"}, nil)
	descInStep  = prometheus.NewDesc("upgraded_host_step_seconds", "Seconds each host has been in its current step.", []string{"plan", "host", "step"}, nil)
	descBackups = prometheus.NewDesc("upgraded_backups", "Backups kept on this host, by kind.", []string{"kind"}, nil)
	descBytes   = prometheus.NewDesc("upgraded_backup_bytes", "Bytes of the backups kept on this host, by kind.", []string{"kind"}, nil)
	descLastOK  = prometheus.NewDesc("upgraded_last_successful_upgrade_timestamp_seconds", "When the last plan that verified every host ended.", nil, nil)
	descLeader  = prometheus.NewDesc("upgraded_raft_has_leader", "1 when the daemons' raft group has a leader.", nil, nil)
	descMembers = prometheus.NewDesc("upgraded_daemons", "Daemons in the raft group.", nil, nil)
	descVoters  = prometheus.NewDesc("upgraded_raft_voters", "Daemons that vote in the raft group; the others receive its log without voting.", nil, nil)
)

// collector reads the plan state at scrape time, so what Prometheus sees is
// what `upgraded status` shows.
type collector struct{ m *Metrics }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPhase, descStep, descInStep, descBackups, descBytes, descLastOK, descLeader, descMembers, descVoters} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.src.State()
	p := st.CurrentPlan()
	if p == nil && st.Last != "" {
		p = st.Plans[st.Last]
	}
	now := time.Now()
	if p != nil {
		ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, 1, p.ID, p.Version, string(p.Proc()), string(p.Phase))
		for id, h := range p.Hosts {
			ch <- prometheus.MustNewConstMetric(descStep, prometheus.GaugeValue, 1, p.ID, id, string(h.Step))
			ch <- prometheus.MustNewConstMetric(descInStep, prometheus.GaugeValue, now.Sub(h.StepStarted).Seconds(), p.ID, id, string(h.Step))
		}
	}
	var lastOK time.Time
	for _, pl := range st.Plans {
		if pl.Succeeded() && pl.Since.After(lastOK) {
			lastOK = pl.Since
		}
	}
	if !lastOK.IsZero() {
		ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, float64(lastOK.UnixNano())/1e9)
	}
	if ms, err := c.m.src.Backups(); err == nil {
		count, size := map[string]float64{}, map[string]float64{}
		for _, b := range ms {
			count[string(b.Kind)]++
			size[string(b.Kind)] += float64(b.Size)
		}
		for k, n := range count {
			ch <- prometheus.MustNewConstMetric(descBackups, prometheus.GaugeValue, n, k)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, size[k], k)
		}
	}
	leader := 0.0
	if c.m.src.Leader() != "" {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(c.m.src.Members()))
	ch <- prometheus.MustNewConstMetric(descVoters, prometheus.GaugeValue, float64(c.m.src.Voters()))
}

// Server serves /metrics and /healthz.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen starts serving on addr (host:port).
func (m *Metrics) Listen(addr string, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", m.healthz)
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving metrics", zap.Error(err))
		}
	}()
	log.Info("metrics served", zap.String("address", ln.Addr().String()))
	return s, nil
}

// Addr is the address served.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving; safe twice.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// healthz answers 200 while the daemons' raft group has a leader, 503 otherwise.
func (m *Metrics) healthz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"leader": m.src.Leader(), "daemons": m.src.Members()}
	code := http.StatusOK
	if m.src.Leader() == "" {
		code, body["error"] = http.StatusServiceUnavailable, "no raft leader among the daemons"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
