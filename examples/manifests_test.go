package examples_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

// obj is one Kubernetes (or Istio) object, read generically.
type obj map[string]any

func (o obj) kind() string { return str(o.get("kind")) }
func (o obj) name() string { return str(o.get("metadata", "name")) }
func (o obj) ns() string   { return str(o.get("metadata", "namespace")) }

// get walks maps by key and lists by int index; nil when absent.
func (o obj) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m := asObj(cur)
			if m == nil {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func (o obj) list(path ...any) []any { l, _ := o.get(path...).([]any); return l }
func (o obj) sub(path ...any) obj    { return asObj(o.get(path...)) }

// asObj accepts both map types yaml.v3 produces (it reuses a named map type
// for nested maps).
func asObj(v any) obj {
	switch m := v.(type) {
	case obj:
		return m
	case map[string]any:
		return obj(m)
	}
	return nil
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// loadKustomization reads every object a kustomization lists, following
// directory resources, and applies its namespace to objects without one.
func loadKustomization(t *testing.T, dir string) []obj {
	t.Helper()
	var k obj
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &k)
	var out []obj
	for _, r := range k.list("resources") {
		p := filepath.Join(dir, str(r))
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, loadKustomization(t, p)...)
			continue
		}
		out = append(out, loadDocs(t, p)...)
	}
	if ns := str(k.get("namespace")); ns != "" {
		for _, o := range out {
			if o.ns() == "" {
				asObj(o["metadata"])["namespace"] = ns
			}
		}
	}
	// Every manifest in the folder is listed, so `apply -k` ships them all.
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && !strings.HasSuffix(base, "-values.yaml") && !slices.Contains(k.list("resources"), any(base)) {
			t.Errorf("%s is not listed in %s/kustomization.yaml", base, dir)
		}
	}
	return out
}

func loadDocs(t *testing.T, path string) []obj {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeDocs(t, path, b)
}

// decodeDocs reads every object of a multi-document YAML stream.
func decodeDocs(t *testing.T, path string, b []byte) []obj {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var out []obj
	for {
		var o obj
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if o == nil {
			continue
		}
		if o.kind() == "" || o.name() == "" || str(o.get("apiVersion")) == "" {
			t.Fatalf("%s: object without apiVersion, kind or name: %v", path, o)
		}
		out = append(out, o)
	}
}

func find(objs []obj, kind, name string) obj {
	for _, o := range objs {
		if o.kind() == kind && (name == "" || o.name() == name) {
			return o
		}
	}
	return nil
}

func labelsMatch(selector, labels obj) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if str(labels[k]) != str(v) {
			return false
		}
	}
	return true
}

// TestKubernetesManifests: the expected kinds exist and reference each other.
func TestKubernetesManifests(t *testing.T) {
	objs := loadKustomization(t, "kubernetes")
	for _, kind := range []string{"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if find(objs, kind, "") == nil {
			t.Fatalf("no %s", kind)
		}
	}
	w := checkWorkload(t, objs, "tokenbroker")
	if n := w.dep.get("spec", "replicas"); n != 3 {
		t.Errorf("replicas %v, want 3", n)
	}
	// Without listen.tls, gRPC health probes on the gRPC port.
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if port, ok := w.container.get(probe, "grpc", "port").(int); !ok || port != w.ports["grpc"] {
			t.Errorf("%s is not a gRPC probe on the grpc port (%v)", probe, w.container.get(probe))
		}
	}
	if w.container.get("readinessProbe", "grpc", "service") != "envoy.service.auth.v3.Authorization" {
		t.Error("readiness does not ask for the Authorization service")
	}
}

// workload is a checked tokenbroker Deployment and what checkWorkload
// learned from it.
type workload struct {
	dep, svc, container obj
	podLabels           obj
	ports               map[string]int // container port by name
	cfg                 *config.Config // the mounted configuration, loaded
	cfgPath             string         // it, with secret files replaced by files in a temporary folder
	env                 map[string]string
	files               map[string]string // path in the container → the temporary file standing in for it
	ca                  *testcerts.CA     // signed the stand-in tls.crt; its PEM stands in for every ca.crt
}

// checkWorkload cross-checks the tokenbroker Deployment and Service named
// name against the other objects, the way a cluster would resolve them:
// selectors match the pods; Service ports target container ports and are
// named for Istio's protocol selection; the pods run hardened; probes use
// ports that exist and a protocol the listener speaks (no gRPC probe of a TLS
// listener: kubelet's cannot speak TLS); every ConfigMap, Secret and key
// referenced exists; the files the configuration names are provided by
// mounted Secrets (or projected tokens), and with stand-ins for them the
// configuration loads; listen ports are the container ports; the grace
// period covers the shutdown; the PDB and NetworkPolicy, when present,
// select the pods and the policy opens only tokenbroker's ports, admin apart.
func checkWorkload(t *testing.T, objs []obj, name string) *workload {
	t.Helper()
	w := &workload{dep: find(objs, "Deployment", name), svc: find(objs, "Service", name), env: map[string]string{}, files: map[string]string{}}
	if w.dep == nil || w.svc == nil {
		t.Fatalf("no Deployment and Service named %s", name)
	}
	w.podLabels = w.dep.sub("spec", "template", "metadata", "labels")
	if !labelsMatch(w.dep.sub("spec", "selector", "matchLabels"), w.podLabels) {
		t.Error("Deployment selector does not match its pods")
	}
	pod := w.dep.sub("spec", "template", "spec")
	w.container = pod.sub("containers", 0)
	c := w.container
	w.ports = map[string]int{}
	for _, p := range c.list("ports") {
		po := asObj(p)
		w.ports[str(po.get("name"))] = po.get("containerPort").(int)
	}

	// runAsNonRoot needs a numeric user to be verifiable.
	psc := pod.sub("securityContext")
	if uid, ok := psc.get("runAsUser").(int); psc.get("runAsNonRoot") != true || !ok || uid == 0 {
		t.Errorf("pod securityContext %v: want runAsNonRoot with a numeric non-root runAsUser", psc)
	}
	if psc.get("seccompProfile", "type") != "RuntimeDefault" {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
	csc := c.sub("securityContext")
	if csc.get("allowPrivilegeEscalation") != false || csc.get("readOnlyRootFilesystem") != true || !slices.Contains(csc.list("capabilities", "drop"), any("ALL")) {
		t.Errorf("container securityContext %v: want no privilege escalation, a read-only root filesystem, all capabilities dropped", csc)
	}
	if pod.get("automountServiceAccountToken") != false {
		t.Error("the pod mounts a Kubernetes API token it never uses")
	}

	// Service → pods and container ports.
	if !labelsMatch(w.svc.sub("spec", "selector"), w.podLabels) {
		t.Error("Service selector does not match the pods")
	}
	portName := map[int]string{}
	for n, p := range w.ports {
		portName[p] = n
	}
	svcPorts := map[string]string{} // container port name → Service port name
	for _, p := range w.svc.list("spec", "ports") {
		po := asObj(p)
		tp := po.get("targetPort")
		target := str(tp)
		if n, ok := tp.(int); ok {
			target = portName[n]
		}
		if w.ports[target] == 0 {
			t.Errorf("Service port %v targets %v, which the container does not expose", po.get("name"), tp)
		}
		svcPorts[target] = str(po.get("name"))
	}

	// ConfigMap and Secret references exist.
	var cfgFile string
	secretKeys := func(secret string) []string {
		sec := find(objs, "Secret", secret)
		if sec == nil {
			return nil
		}
		keys := slices.Collect(maps.Keys(asObj(sec.get("stringData"))))
		keys = append(keys, slices.Collect(maps.Keys(asObj(sec.get("data"))))...)
		return keys
	}
	mounts := map[string]string{}
	for _, m := range c.list("volumeMounts") {
		mo := asObj(m)
		mounts[str(mo.get("name"))] = str(mo.get("mountPath"))
	}
	provided := map[string]string{} // path in the container → Secret key (or "token" for a projected token)
	for _, v := range pod.list("volumes") {
		vo := asObj(v)
		vname := str(vo.get("name"))
		if cm := str(vo.get("configMap", "name")); cm != "" {
			o := find(objs, "ConfigMap", cm)
			if o == nil {
				t.Fatalf("volume references missing ConfigMap %s", cm)
			}
			cfgFile = str(o.get("data", "tokenbroker.yaml"))
			if mounts[vname] != "/etc/tokenbroker" {
				t.Errorf("ConfigMap %s is mounted at %q, not /etc/tokenbroker", cm, mounts[vname])
			}
			continue
		}
		mount := mounts[vname]
		if secret := str(vo.get("secret", "secretName")); secret != "" {
			keys := secretKeys(secret)
			if keys == nil {
				t.Fatalf("volume %s references missing Secret %s", vname, secret)
			}
			if mount == "" {
				t.Fatalf("Secret volume %s is not mounted", vname)
			}
			items := vo.list("secret", "items")
			for _, it := range items {
				io := asObj(it)
				if !slices.Contains(keys, str(io.get("key"))) {
					t.Errorf("volume %s names key %v, which Secret %s does not hold", vname, io.get("key"), secret)
				}
				provided[mount+"/"+str(io.get("path"))] = str(io.get("key"))
			}
			if len(items) == 0 {
				for _, k := range keys {
					provided[mount+"/"+k] = k
				}
			}
			continue
		}
		for _, src := range vo.list("projected", "sources") {
			if p := str(asObj(src).get("serviceAccountToken", "path")); p != "" && mount != "" {
				provided[mount+"/"+p] = "token"
			}
		}
	}
	if !slices.Contains(c.list("args"), any("/etc/tokenbroker/tokenbroker.yaml")) {
		t.Error("args do not name the mounted configuration")
	}
	for _, e := range c.list("env") {
		eo := asObj(e)
		name := str(eo.get("name"))
		if ref := eo.sub("valueFrom", "secretKeyRef"); ref != nil {
			if !slices.Contains(secretKeys(str(ref.get("name"))), str(ref.get("key"))) {
				t.Errorf("env %s references missing Secret key %s/%s", name, ref.get("name"), ref.get("key"))
			}
			w.env[name] = "from-secret"
			continue
		}
		w.env[name] = str(eo.get("value"))
	}

	// The files the configuration names under the mounts exist as keys;
	// the Secrets hold placeholders (or are not in the manifests at all), so
	// the test stands in real keys and certificates.
	secretDir := t.TempDir()
	ca := testcerts.NewCA(t, "cluster-ca")
	w.ca = ca
	serverCert, serverKey := ca.Issue(t, "tokenbroker", false)
	paths := slices.SortedFunc(maps.Keys(provided), func(a, b string) int { return len(b) - len(a) }) // longest first: no path is cut short
	for i, path := range paths {
		if !strings.Contains(cfgFile, path) {
			continue
		}
		var content []byte
		switch provided[path] {
		case "tls.crt":
			content = serverCert
		case "tls.key":
			content = serverKey
		case "ca.crt":
			content = ca.PEM()
		case "token":
			content = []byte("eyJhbGciOiJub25lIn0.e30.\n")
		default:
			k := make([]byte, 32)
			_, _ = rand.Read(k)
			content = []byte(base64.StdEncoding.EncodeToString(k) + "\n")
		}
		local := filepath.Join(secretDir, fmt.Sprint(i), filepath.Base(path))
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, content, 0o600); err != nil {
			t.Fatal(err)
		}
		cfgFile = strings.ReplaceAll(cfgFile, path, local)
		w.files[path] = local
	}
	if strings.Contains(cfgFile, "/run/secrets/") || strings.Contains(cfgFile, "/var/run/") {
		t.Error("the configuration names a file no mounted Secret or projected token provides")
	}
	w.cfgPath = filepath.Join(t.TempDir(), "tokenbroker.yaml")
	if err := os.WriteFile(w.cfgPath, []byte(cfgFile), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range w.env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(w.cfgPath)
	if err != nil {
		t.Fatalf("the mounted tokenbroker.yaml: %v", err)
	}
	w.cfg = cfg
	listen := map[string]string{"grpc": cfg.Listen.GRPC, "http": cfg.Listen.HTTP, "admin": cfg.Listen.Admin, "broker": cfg.Listen.Broker}
	for what, addr := range listen {
		if addr == "" && w.ports[what] == 0 {
			continue
		}
		if portOf(addr) != fmt.Sprint(w.ports[what]) {
			t.Errorf("listen.%s %q, container port %d", what, addr, w.ports[what])
		}
		if host, _, _ := strings.Cut(addr, ":"); host == "127.0.0.1" || host == "localhost" {
			t.Errorf("listen.%s %s is loopback: nothing outside the pod reaches it", what, addr)
		}
	}
	// Istio picks the protocol from the Service port's name; with listen.tls
	// the token listeners speak TLS, which the sidecar must pass through.
	for target, want := range map[string]string{"grpc": "grpc-", "http": "http-", "broker": "http-", "admin": "http-"} {
		if cfg.Listen.TLS.Enabled() && target != "admin" {
			want = "tls-"
		}
		if n, ok := svcPorts[target]; ok && !strings.HasPrefix(n, want) {
			t.Errorf("Service port %s (→ %s) should be named %s… for Istio", n, target, want)
		}
	}

	// Probes: on ports that exist, in a protocol the listener speaks.
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		p := c.sub(probe)
		switch {
		case p.get("grpc") != nil:
			if port, _ := p.get("grpc", "port").(int); port != w.ports["grpc"] {
				t.Errorf("%s: gRPC probe on port %v, not the grpc listener's", probe, p.get("grpc", "port"))
			}
			if cfg.Listen.TLS.Enabled() {
				t.Errorf("%s: a kubelet gRPC probe cannot speak listen.tls; probe the admin listener's /readyz", probe)
			}
		case p.get("httpGet") != nil:
			port := p.get("httpGet", "port")
			if n, ok := port.(int); ok {
				port = portName[n]
			}
			if port != "admin" || !slices.Contains([]any{"/readyz", "/healthz"}, p.get("httpGet", "path")) {
				t.Errorf("%s: HTTP probe of %v on %v: only the admin listener serves /readyz and /healthz", probe, p.get("httpGet", "path"), port)
			}
		default:
			t.Errorf("%s: missing or of an unknown kind: %v", probe, p)
		}
	}

	grace, _ := pod.get("terminationGracePeriodSeconds").(int)
	if float64(grace) <= (cfg.Shutdown.Delay.D() + cfg.Shutdown.Drain.D()).Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d does not cover shutdown.delay + drain", grace)
	}

	// PDB and NetworkPolicy select the tokenbroker pods; the policy opens
	// only tokenbroker's ports, and never the admin port with the others.
	if pdb := find(objs, "PodDisruptionBudget", ""); pdb != nil && !labelsMatch(pdb.sub("spec", "selector", "matchLabels"), w.podLabels) {
		t.Error("PodDisruptionBudget selects other pods")
	}
	if np := find(objs, "NetworkPolicy", ""); np != nil {
		if !labelsMatch(np.sub("spec", "podSelector", "matchLabels"), w.podLabels) {
			t.Error("NetworkPolicy selects other pods")
		}
		for _, rule := range np.list("spec", "ingress") {
			ro := asObj(rule)
			if len(ro.list("from")) == 0 {
				t.Error("an ingress rule allows every source")
			}
			admin, token := false, false
			for _, p := range ro.list("ports") {
				port := asObj(p).get("port").(int)
				switch portName[port] {
				case "admin":
					admin = true
				case "grpc", "http", "broker":
					token = true
				default:
					t.Errorf("NetworkPolicy opens port %d", port)
				}
			}
			if admin && token {
				t.Error("one NetworkPolicy rule opens the admin port and the token ports to the same peers")
			}
		}
	}
	return w
}

// TestIstioManifests: the extension providers point at the tokenbroker
// Service, the AuthorizationPolicy names one of them and selects the egress
// gateway, and the egress routing objects reference each other.
func TestIstioManifests(t *testing.T) {
	objs := loadKustomization(t, "istio")
	for _, kind := range []string{"ServiceEntry", "Gateway", "VirtualService", "DestinationRule", "AuthorizationPolicy", "Deployment", "Service"} {
		if find(objs, kind, "") == nil {
			t.Fatalf("no %s", kind)
		}
	}
	var values obj
	readYAML(t, "istio/istiod-values.yaml", &values)
	svc := find(objs, "Service", "tokenbroker")
	svcPorts := map[int]string{}
	for _, p := range svc.list("spec", "ports") {
		po := asObj(p)
		svcPorts[po.get("port").(int)] = str(po.get("name"))
	}
	providers := map[string]bool{}
	for _, p := range values.list("meshConfig", "extensionProviders") {
		po := asObj(p)
		providers[str(po.get("name"))] = true
		kind, want := "envoyExtAuthzGrpc", "grpc"
		if po.get(kind) == nil {
			kind, want = "envoyExtAuthzHttp", "http"
		}
		e := po.sub(kind)
		if e == nil {
			t.Fatalf("provider %v is neither gRPC nor HTTP ext_authz", po.get("name"))
		}
		if host := fmt.Sprintf("%s.%s.svc.cluster.local", svc.name(), svc.ns()); e.get("service") != host {
			t.Errorf("provider %v: service %v, want %s", po.get("name"), e.get("service"), host)
		}
		if name := svcPorts[e.get("port").(int)]; !strings.HasPrefix(name, want) {
			t.Errorf("provider %v: port %v is %q on the Service, want a %s port", po.get("name"), e.get("port"), name, want)
		}
		if e.get("timeout") == nil || e.get("failOpen") != false || e.get("statusOnError") != "503" {
			t.Errorf("provider %v: needs an explicit timeout, failOpen: false and statusOnError: \"503\"", po.get("name"))
		}
		if kind == "envoyExtAuthzHttp" && (e.get("pathPrefix") != "/envoy" || !slices.Contains(e.list("headersToUpstreamOnAllow"), any("authorization"))) {
			t.Errorf("HTTP provider must use pathPrefix /envoy and pass authorization upstream")
		}
	}
	if n := values.get("meshConfig", "pathNormalization", "normalization"); n != "MERGE_SLASHES" {
		t.Errorf("meshConfig.pathNormalization.normalization = %v, want MERGE_SLASHES (README \"Path rules\")", n)
	}
	if !providers["tokenbroker-grpc"] || !providers["tokenbroker-http"] {
		t.Fatalf("providers %v", providers)
	}

	ap := find(objs, "AuthorizationPolicy", "")
	if ap.get("spec", "action") != "CUSTOM" || !providers[str(ap.get("spec", "provider", "name"))] {
		t.Errorf("AuthorizationPolicy: action %v provider %v", ap.get("spec", "action"), ap.get("spec", "provider", "name"))
	}
	gw := find(objs, "Gateway", "")
	if !labelsMatch(ap.sub("spec", "selector", "matchLabels"), gw.sub("spec", "selector")) {
		t.Error("AuthorizationPolicy does not select the egress gateway")
	}

	se := find(objs, "ServiceEntry", "")
	vs := find(objs, "VirtualService", "")
	for _, h := range vs.list("spec", "hosts") {
		if !slices.Contains(se.list("spec", "hosts"), h) || !slices.Contains(gw.list("spec", "servers", 0, "hosts"), h) {
			t.Errorf("VirtualService host %v is not in the ServiceEntry and Gateway", h)
		}
		if !slices.Contains(ap.list("spec", "rules", 0, "to", 0, "operation", "hosts"), h) {
			t.Errorf("AuthorizationPolicy does not cover %v", h)
		}
	}
	for _, g := range vs.list("spec", "gateways") {
		if g != "mesh" && g != gw.ns()+"/"+gw.name() && g != gw.name() {
			t.Errorf("VirtualService names unknown gateway %v", g)
		}
	}
	// Each route's destination: a subset that exists, or a host with TLS origination on that port.
	for i := range vs.list("spec", "http") {
		d := vs.sub("spec", "http", i, "route", 0, "destination")
		var dr obj
		for _, o := range objs {
			if o.kind() == "DestinationRule" && o.get("spec", "host") == d.get("host") {
				dr = o
			}
		}
		if dr == nil {
			t.Errorf("no DestinationRule for %v", d.get("host"))
			continue
		}
		if subset := d.get("subset"); subset != nil {
			if dr.get("spec", "subsets", 0, "name") != subset {
				t.Errorf("subset %v missing in %s", subset, dr.name())
			}
			continue
		}
		pls := dr.sub("spec", "trafficPolicy", "portLevelSettings", 0)
		if pls.get("port", "number") != d.get("port", "number") || pls.get("tls", "mode") != "SIMPLE" {
			t.Errorf("no TLS origination to %v:%v", d.get("host"), d.get("port", "number"))
		}
	}
	// tokenbroker has a route for the egress host.
	cm := find(objs, "ConfigMap", "tokenbroker-config")
	if !strings.Contains(str(cm.get("data", "tokenbroker.yaml")), "host: "+str(se.get("spec", "hosts", 0))) {
		t.Errorf("tokenbroker has no route for %v", se.get("spec", "hosts", 0))
	}
}
