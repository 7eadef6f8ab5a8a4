package examples_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const chartDir = "../charts/tokenbroker"

// helmBinary is the helm that .ci/install-deps builds with `go install`, or one on PATH.
func helmBinary(t *testing.T) string {
	t.Helper()
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	return need(t, filepath.Join(strings.TrimSpace(string(gopath)), "bin", "helm"))
}

// renderChart runs helm template with one of the chart's ci/ values files
// and decodes every object strictly into its Kubernetes API type.
func renderChart(t *testing.T, values string) []obj {
	t.Helper()
	helm := helmBinary(t)
	out, err := exec.Command(helm, "template", "tb", chartDir, "--namespace", "tokenbroker", "-f", filepath.Join(chartDir, "ci", values)).CombinedOutput()
	if err != nil {
		t.Fatalf("helm template -f ci/%s: %v\n%s", values, err, out)
	}
	objs := decodeDocs(t, "ci/"+values, out)
	for _, o := range objs {
		decodeStrictly(t, o)
	}
	return objs
}

// certificate is the part of cert-manager's Certificate (cert-manager.io/v1)
// that the chart writes; a field outside it is a typo, and fails.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		DNSNames    []string `json:"dnsNames"`
		Usages      []string `json:"usages"`
		IssuerRef   struct {
			Name, Kind, Group string
		} `json:"issuerRef"`
		PrivateKey struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
	} `json:"spec"`
}

// kinds are the API types the chart may render, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return new(corev1.ConfigMap) },
	"v1/Service":                              func() any { return new(corev1.Service) },
	"v1/ServiceAccount":                       func() any { return new(corev1.ServiceAccount) },
	"apps/v1/Deployment":                      func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":           func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return new(networkingv1.NetworkPolicy) },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(monitoringv1.ServiceMonitor) },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return new(monitoringv1.PrometheusRule) },
	"cert-manager.io/v1/Certificate":          func() any { return new(certificate) },
}

// decodeStrictly decodes o into its API type, refusing unknown fields and
// wrong types, as the API server would.
func decodeStrictly(t *testing.T, o obj) any {
	t.Helper()
	gvk := str(o.get("apiVersion")) + "/" + o.kind()
	newT, ok := kinds[gvk]
	if !ok {
		t.Fatalf("%s %s: not a kind the chart should render", gvk, o.name())
	}
	b, err := json.Marshal(map[string]any(o))
	if err != nil {
		t.Fatal(err)
	}
	v := newT()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s %s does not decode into its API type: %v", gvk, o.name(), err)
	}
	return v
}

// clusterSecrets are the Secrets the ci/ values files assume exist (the
// chart only references Secrets), with their keys.
var clusterSecrets = map[string][]string{
	"tokenbroker-credentials": {"billing-client-secret"},
	"tokenbroker-redis-auth":  {"password"},
	"tokenbroker-redis-keys":  {"keys"},
	"tokenbroker-admin":       {"token"},
	"tokenbroker-maps":        {"key"},
	"mesh-ca":                 {"ca.crt"},
	"tokenbroker-orders":      {"client-secret"},
	"tokenbroker-tls":         {"tls.crt", "tls.key", "ca.crt"},
}

// withSecrets adds the cluster's Secrets to objs, and the Secret each
// cert-manager Certificate makes (tls.crt, tls.key, ca.crt).
func withSecrets(objs []obj) []obj {
	secret := func(name string, keys []string) obj {
		data := map[string]any{}
		for _, k := range keys {
			data[k] = "placeholder"
		}
		return obj{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": name}, "stringData": data}
	}
	for name, keys := range clusterSecrets {
		objs = append(objs, secret(name, keys))
	}
	for _, o := range objs {
		if o.kind() == "Certificate" {
			objs = append(objs, secret(str(o.get("spec", "secretName")), []string{"tls.crt", "tls.key", "ca.crt"}))
		}
	}
	return objs
}

// TestChartLint: helm lint --strict passes for every ci/ values file, and
// the schema refuses what the chart must never deploy.
func TestChartLint(t *testing.T) {
	helm := helmBinary(t)
	files, _ := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if len(files) < 3 {
		t.Fatalf("ci/ values files: %v", files)
	}
	for _, f := range files {
		if out, err := exec.Command(helm, "lint", "--strict", chartDir, "-f", f).CombinedOutput(); err != nil {
			t.Errorf("helm lint -f %s: %v\n%s", f, err, out)
		}
	}
	for _, bad := range [][]string{
		{"--set", "image.tag=latest"},
		{"--set", "config.listen.grpc=127.0.0.1:9191"},             // the chart owns listen:
		{"--set", "ports.admin=0"},                                 // the probes need it
		{"--set", "replicas=3"},                                    // a typo of replicaCount
		{"--set", "tls.enabled=true"},                              // no Secret and no cert-manager
		{"--set", "tls.enabled=true,tls.certManager.enabled=true"}, // no issuer
		{"--set", "secretEnv.X.secretName=s"},                      // no key
	} {
		out, err := exec.Command(helm, append([]string{"template", "tb", chartDir}, bad...)...).CombinedOutput()
		if err == nil {
			t.Errorf("helm template %v rendered:\n%.300s", bad, out)
		}
	}
}

// TestChartDefault: the default values render a cross-checked workload on a
// pinned image whose configuration loads.
func TestChartDefault(t *testing.T) {
	objs := renderChart(t, "default-values.yaml")
	w := checkWorkload(t, withSecrets(objs), "tb-tokenbroker")
	checkChartBasics(t, objs, w)
	for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "ServiceAccount"} {
		if find(objs, kind, "") == nil {
			t.Errorf("no %s by default", kind)
		}
	}
	for _, kind := range []string{"Certificate", "ServiceMonitor", "PrometheusRule"} {
		if find(objs, kind, "") != nil {
			t.Errorf("%s rendered by default", kind)
		}
	}
	validateWithBinary(t, w)
}

// TestChartFull: every optional part on, each cross-checked.
func TestChartFull(t *testing.T) {
	objs := renderChart(t, "full-values.yaml")
	w := checkWorkload(t, withSecrets(objs), "tb-tokenbroker")
	checkChartBasics(t, objs, w)
	if !w.cfg.Listen.TLS.Enabled() || w.cfg.Listen.TLS.ClientCAFile == "" || w.cfg.Cache.Redis == nil || w.cfg.Listen.Broker == "" || w.cfg.Admin.TokenFile == "" {
		t.Fatalf("the full values leave something off: %+v", w.cfg.Listen)
	}
	if img := str(w.container.get("image")); !strings.Contains(img, "@sha256:") {
		t.Errorf("image.digest not used: %s", img)
	}

	// cert-manager's Secret is the one mounted for listen.tls, for the Service's names.
	cert := find(objs, "Certificate", "")
	tlsMounted := false
	for _, v := range w.dep.list("spec", "template", "spec", "volumes") {
		tlsMounted = tlsMounted || asObj(v).get("secret", "secretName") == cert.get("spec", "secretName")
	}
	if !tlsMounted {
		t.Errorf("Certificate's Secret %v is not mounted", cert.get("spec", "secretName"))
	}
	for _, want := range []string{w.svc.name(), w.svc.name() + ".tokenbroker.svc"} {
		if !slices.Contains(cert.list("spec", "dnsNames"), any(want)) {
			t.Errorf("Certificate lacks the Service name %s", want)
		}
	}
	if cert.get("spec", "issuerRef", "name") == "" {
		t.Error("Certificate without an issuer")
	}

	// The ServiceMonitor scrapes the admin port of this Service.
	sm := find(objs, "ServiceMonitor", "")
	if !labelsMatch(sm.sub("spec", "selector", "matchLabels"), w.svc.sub("metadata", "labels")) {
		t.Error("ServiceMonitor does not select the Service")
	}
	adminPort := ""
	for _, p := range w.svc.list("spec", "ports") {
		if asObj(p).get("targetPort") == "admin" {
			adminPort = str(asObj(p).get("name"))
		}
	}
	if sm.get("spec", "endpoints", 0, "port") != adminPort || sm.get("spec", "endpoints", 0, "path") != "/metrics" {
		t.Errorf("ServiceMonitor endpoint %v, want port %s path /metrics", sm.get("spec", "endpoints", 0), adminPort)
	}
	checkAlerts(t, find(objs, "PrometheusRule", ""), w)

	np := find(objs, "NetworkPolicy", "")
	if !slices.Contains(np.list("spec", "policyTypes"), any("Egress")) || len(np.list("spec", "egress")) == 0 {
		t.Error("networkPolicy.egress set but the policy does not restrict egress")
	}
	validateWithBinary(t, w)
}

// TestChartExistingConfigMap: with existingConfigMap the chart writes no
// ConfigMap and mounts that one; the optional parts it turns off are off.
func TestChartExistingConfigMap(t *testing.T) {
	objs := renderChart(t, "existing-configmap-values.yaml")
	if find(objs, "ConfigMap", "") != nil {
		t.Error("a ConfigMap rendered although existingConfigMap is set")
	}
	dep := find(objs, "Deployment", "")
	if dep.get("spec", "template", "spec", "volumes", 0, "configMap", "name") != "tokenbroker-config" {
		t.Errorf("the pods do not mount existingConfigMap: %v", dep.get("spec", "template", "spec", "volumes", 0))
	}
	for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} {
		if find(objs, kind, "") != nil {
			t.Errorf("%s rendered although turned off", kind)
		}
	}
	if dep.get("spec", "template", "spec", "serviceAccountName") != "default" {
		t.Errorf("serviceAccount.create=false: pods use %v", dep.get("spec", "template", "spec", "serviceAccountName"))
	}
}

// checkChartBasics: labels and the image tag, the chart's own promises.
func checkChartBasics(t *testing.T, objs []obj, w *workload) {
	t.Helper()
	var chart obj
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &chart)
	img := str(w.container.get("image"))
	if strings.HasSuffix(img, ":latest") || !strings.Contains(img, ":"+str(chart.get("appVersion"))) && !strings.Contains(img, "@sha256:") {
		t.Errorf("image %s: want the chart's appVersion %v (or a digest), never latest", img, chart.get("appVersion"))
	}
	for _, o := range objs {
		if o.ns() != "tokenbroker" {
			t.Errorf("%s %s in namespace %q, not the release's", o.kind(), o.name(), o.ns())
		}
		if o.get("metadata", "labels", "app.kubernetes.io/managed-by") != "Helm" {
			t.Errorf("%s %s lacks the standard labels", o.kind(), o.name())
		}
	}
	spread := w.dep.list("spec", "template", "spec", "topologySpreadConstraints")
	if len(spread) == 0 {
		t.Error("no topology spread")
	}
	for _, c := range spread {
		if !labelsMatch(asObj(c).sub("labelSelector", "matchLabels"), w.podLabels) {
			t.Error("a topology spread constraint counts other pods")
		}
	}
	if w.container.sub("resources", "requests") == nil || w.container.get("resources", "limits", "memory") == nil {
		t.Error("no resource requests or memory limit")
	}
}

// validateWithBinary runs `tokenbroker validate` on the mounted
// configuration (with stand-ins for its secret files), as an operator would.
func validateWithBinary(t *testing.T, w *workload) {
	t.Helper()
	cmd := exec.Command(releaseBinary(t), "validate", "--config", w.cfgPath)
	cmd.Env = os.Environ()
	for k, v := range w.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok (") {
		t.Fatalf("tokenbroker validate: %v\n%s", err, out)
	}
}

// metricHelp is every tokenbroker_* metric the code registers, with its
// help text, read from the non-test Go sources.
func metricHelp(t *testing.T) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`(?s)(?:Name:\s*|NewDesc\()"(tokenbroker_\w+)",\s*(?:Help:\s*)?"((?:[^"\\]|\\.)*)"`)
	out := map[string]string{}
	_ = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = m[2]
		}
		return nil
	})
	if len(out) < 10 {
		t.Fatalf("found only %d metrics in the sources: %v", len(out), out)
	}
	return out
}

// checkAlerts: every alert parses as PromQL, uses only metrics the code
// exports, label values their help text names, this release's Service, and
// labels in its annotations that its aggregation keeps; the alerts the
// README promises exist.
func checkAlerts(t *testing.T, rule obj, w *workload) {
	t.Helper()
	var pr monitoringv1.PrometheusRule
	b, _ := json.Marshal(map[string]any(rule))
	if err := json.Unmarshal(b, &pr); err != nil {
		t.Fatal(err)
	}
	help := metricHelp(t)
	seen := map[string]bool{}
	used := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			seen[r.Alert] = true
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr.String())
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
				continue
			}
			var groupings [][]string
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				switch n := n.(type) {
				case *parser.AggregateExpr:
					groupings = append(groupings, n.Grouping)
				case *parser.VectorSelector:
					h, ok := help[n.Name]
					if !ok {
						t.Errorf("%s: metric %s is not one tokenbroker exports", r.Alert, n.Name)
					}
					used[n.Name] = true
					for _, m := range n.LabelMatchers {
						switch m.Name {
						case "service":
							if m.Value != w.svc.name() {
								t.Errorf("%s: service=%q, the Service is %s", r.Alert, m.Value, w.svc.name())
							}
						case "result", "level":
							for _, v := range strings.Split(m.Value, "|") {
								if !strings.Contains(h, v) {
									t.Errorf("%s: %s{%s=%q}: %q is not a value its help names (%s)", r.Alert, n.Name, m.Name, m.Value, v, h)
								}
							}
						}
					}
				}
				return nil
			})
			for _, ann := range []string{"summary", "description"} {
				text := r.Annotations[ann]
				if text == "" {
					t.Errorf("%s: no %s", r.Alert, ann)
				}
				for _, m := range regexp.MustCompile(`\$labels\.(\w+)`).FindAllStringSubmatch(text, -1) {
					for _, gr := range groupings {
						if !slices.Contains(gr, m[1]) {
							t.Errorf("%s: %s uses $labels.%s, which `by (%s)` drops", r.Alert, ann, m[1], strings.Join(gr, ", "))
						}
					}
				}
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity", r.Alert)
			}
		}
	}
	for _, a := range []string{"TokenbrokerMintsFailing", "TokenbrokerTokenNotRefreshed", "TokenbrokerBudgetAt80Percent", "TokenbrokerBudgetUsedUp", "TokenbrokerReloadRejected", "TokenbrokerRedisBreakerOpen", "TokenbrokerDenialsRising"} {
		if !seen[a] {
			t.Errorf("no alert %s", a)
		}
	}
	if len(used) < 6 {
		t.Errorf("alerts use only %v", used)
	}
}

// TestChartProbesWithTLS runs tokenbroker on the configuration the chart
// renders with listen.tls and client certificates on (ci/tls-values.yaml),
// then does what kubelet would: the Deployment's probes succeed, while a
// plaintext gRPC health probe (what a kubelet gRPC probe sends) fails.
func TestChartProbesWithTLS(t *testing.T) {
	objs := renderChart(t, "tls-values.yaml")
	w := checkWorkload(t, withSecrets(objs), "tb-tokenbroker")
	if !w.cfg.Listen.TLS.Enabled() || w.cfg.Listen.TLS.ClientCAFile == "" {
		t.Fatal("ci/tls-values.yaml does not turn on TLS with client certificates")
	}
	// The pod's ports, on loopback here.
	local := map[string]string{}
	raw, err := os.ReadFile(w.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfgText := string(raw)
	for _, what := range []string{"grpc", "http", "admin"} {
		local[what] = freePort(t)
		cfgText = strings.Replace(cfgText, fmt.Sprintf("%s: \":%d\"", what, w.ports[what]), fmt.Sprintf("%s: %q", what, local[what]), 1)
	}
	cfgPath := filepath.Join(t.TempDir(), "tokenbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := releaseBinary(t)
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Env = os.Environ()
	for k, v := range w.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	startPeer(t, `"msg":"serving"`, cmd)

	portAddr := map[int]string{}
	for name, p := range w.ports {
		portAddr[p] = local[name]
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		g := w.container.sub(probe, "httpGet")
		port := g.get("port")
		addr := local[str(port)]
		if n, ok := port.(int); ok {
			addr = portAddr[n]
		}
		resp, err := http.Get("http://" + addr + str(g.get("path")))
		if err != nil {
			t.Fatalf("%s: %v", probe, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", probe, resp.Status)
		}
	}
	health := func(args ...string) error {
		out, err := exec.Command(bin, append([]string{"health", "--timeout", "3s"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := health("--grpc", local["grpc"]); err == nil {
		t.Error("a plaintext gRPC health probe of the TLS listener succeeded")
	}
	// ci/tls-values.yaml trusts the TLS Secret's ca.crt for clients too.
	clientCrt, clientKey := w.ca.IssueFiles(t, t.TempDir(), "envoy", "envoy", true)
	if err := health("--config", cfgPath, "--tls-cert", clientCrt, "--tls-key", clientKey); err != nil {
		t.Errorf("health over TLS with a client certificate: %v", err)
	}
	if err := health("--config", cfgPath); err == nil || !strings.Contains(err.Error(), "client_ca_file") {
		t.Errorf("health without a client certificate: %v", err)
	}
}
