package examples_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/config"
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
	dep := find(objs, "Deployment", "tokenbroker")
	svc := find(objs, "Service", "tokenbroker")
	for _, kind := range []string{"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if find(objs, kind, "") == nil {
			t.Fatalf("no %s", kind)
		}
	}
	if n := dep.get("spec", "replicas"); n != 3 {
		t.Errorf("replicas %v, want 3", n)
	}
	podLabels := dep.sub("spec", "template", "metadata", "labels")
	if !labelsMatch(dep.sub("spec", "selector", "matchLabels"), podLabels) {
		t.Error("Deployment selector does not match its pods")
	}
	c := dep.sub("spec", "template", "spec", "containers", 0)
	ports := map[string]int{}
	for _, p := range c.list("ports") {
		po := asObj(p)
		ports[str(po.get("name"))] = po.get("containerPort").(int)
	}

	// runAsNonRoot needs a numeric user to be verifiable.
	psc := dep.sub("spec", "template", "spec", "securityContext")
	if uid, ok := psc.get("runAsUser").(int); psc.get("runAsNonRoot") != true || !ok || uid == 0 {
		t.Errorf("pod securityContext %v: want runAsNonRoot with a numeric non-root runAsUser", psc)
	}

	// gRPC health probes on the gRPC port.
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if port, ok := c.get(probe, "grpc", "port").(int); !ok || port != ports["grpc"] {
			t.Errorf("%s is not a gRPC probe on the grpc port (%v)", probe, c.get(probe))
		}
	}
	if c.get("readinessProbe", "grpc", "service") != "envoy.service.auth.v3.Authorization" {
		t.Error("readiness does not ask for the Authorization service")
	}

	// Service → pods and container ports.
	if !labelsMatch(svc.sub("spec", "selector"), podLabels) {
		t.Error("Service selector does not match the pods")
	}
	for _, p := range svc.list("spec", "ports") {
		po := asObj(p)
		tp := po.get("targetPort")
		if n, ok := tp.(int); ok && !slices.Contains(mapValues(ports), n) || !ok && ports[str(tp)] == 0 {
			t.Errorf("Service port %v targets %v, which the container does not expose", po.get("name"), tp)
		}
	}

	// ConfigMap and Secret references exist, and the configuration loads.
	var cfgFile string
	for _, v := range dep.list("spec", "template", "spec", "volumes") {
		vo := asObj(v)
		if name := str(vo.get("configMap", "name")); name != "" {
			cm := find(objs, "ConfigMap", name)
			if cm == nil {
				t.Fatalf("volume references missing ConfigMap %s", name)
			}
			cfgFile = str(cm.get("data", "tokenbroker.yaml"))
		}
	}
	if !slices.Contains(c.list("args"), any("/etc/tokenbroker/tokenbroker.yaml")) || c.get("volumeMounts", 0, "mountPath") != "/etc/tokenbroker" {
		t.Error("args do not name the mounted configuration")
	}
	env := map[string]string{}
	for _, e := range c.list("env") {
		eo := asObj(e)
		name := str(eo.get("name"))
		if ref := eo.sub("valueFrom", "secretKeyRef"); ref != nil {
			sec := find(objs, "Secret", str(ref.get("name")))
			if sec == nil || sec.get("stringData", str(ref.get("key"))) == nil {
				t.Errorf("env %s references missing Secret key %s/%s", name, ref.get("name"), ref.get("key"))
			}
			env[name] = "from-secret"
			continue
		}
		env[name] = str(eo.get("value"))
	}
	// Secret volumes: the Secret exists, and the files the configuration
	// names under the mount exist as keys of it. The example Secret holds
	// placeholders on purpose, so the test stands in real keys.
	secretDir := t.TempDir()
	for _, v := range dep.list("spec", "template", "spec", "volumes") {
		vo := asObj(v)
		name := str(vo.get("secret", "secretName"))
		if name == "" {
			continue
		}
		sec := find(objs, "Secret", name)
		if sec == nil {
			t.Fatalf("volume references missing Secret %s", name)
		}
		var mount string
		for _, m := range c.list("volumeMounts") {
			if mo := asObj(m); mo.get("name") == vo.get("name") {
				mount = str(mo.get("mountPath"))
			}
		}
		if mount == "" {
			t.Fatalf("Secret volume %s is not mounted", name)
		}
		for key := range asObj(sec.get("stringData")) {
			if !strings.Contains(cfgFile, mount+"/"+key) {
				continue
			}
			k := make([]byte, 32)
			_, _ = rand.Read(k)
			if err := os.WriteFile(filepath.Join(secretDir, key), []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfgFile = strings.ReplaceAll(cfgFile, mount+"/"+key, filepath.Join(secretDir, key))
		}
	}
	if strings.Contains(cfgFile, "/run/secrets/") {
		t.Error("the configuration names a secret file no mounted Secret provides")
	}
	p := filepath.Join(t.TempDir(), "tokenbroker.yaml")
	if err := os.WriteFile(p, []byte(cfgFile), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatalf("ConfigMap tokenbroker.yaml: %v", err)
	}
	for what, addr := range map[string]string{"grpc": cfg.Listen.GRPC, "http": cfg.Listen.HTTP, "admin": cfg.Listen.Admin} {
		if portOf(addr) != fmt.Sprint(ports[what]) {
			t.Errorf("listen.%s %s, container port %d", what, addr, ports[what])
		}
	}
	grace := dep.get("spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	if float64(grace) <= (cfg.Shutdown.Delay.D() + cfg.Shutdown.Drain.D()).Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d does not cover shutdown.delay + drain", grace)
	}

	// PDB and NetworkPolicy select the tokenbroker pods; the policy opens
	// only the ext_authz ports to proxies.
	if !labelsMatch(find(objs, "PodDisruptionBudget", "").sub("spec", "selector", "matchLabels"), podLabels) {
		t.Error("PodDisruptionBudget selects other pods")
	}
	np := find(objs, "NetworkPolicy", "")
	if !labelsMatch(np.sub("spec", "podSelector", "matchLabels"), podLabels) {
		t.Error("NetworkPolicy selects other pods")
	}
	for _, rule := range np.list("spec", "ingress") {
		ro := asObj(rule)
		if len(ro.list("from")) == 0 {
			t.Error("an ingress rule allows every source")
		}
		for _, p := range ro.list("ports") {
			port := asObj(p).get("port").(int)
			if port != ports["grpc"] && port != ports["http"] && port != ports["admin"] {
				t.Errorf("NetworkPolicy opens port %d", port)
			}
		}
	}
}

func mapValues(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
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
