package examples_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	credinjv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testcerts"
	"github.com/tokenbroker/tokenbroker/internal/tlsreload"
	"github.com/tokenbroker/tokenbroker/sds"
)

const injectorType = "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector"

// isPushMode reports whether a bootstrap (as compact JSON) injects
// credentials itself from SDS rather than asking tokenbroker per request.
func isPushMode(text string) bool { return strings.Contains(text, `"@type":"`+injectorType+`"`) }

// pushPairs are the push-mode Envoy bootstraps and the tokenbroker
// configuration each subscribes to.
var pushPairs = [][2]string{
	{"envoy-sds/envoy.yaml", "envoy-sds/tokenbroker.yaml"},
	{"docker-compose/envoy-sds.yaml", "docker-compose/tokenbroker.yaml"},
}

// injector is one credential_injector filter of a bootstrap.
type injector struct {
	filter  string // the HTTP filter's name
	secret  string // the SDS secret (= credential) it subscribes to
	header  string
	cluster string // the SDS server's cluster
	enabled int    // routes that turn it on
}

// checkInjectorFilter checks one credential_injector HTTP filter the way
// push mode needs it, and returns what it subscribes to.
func checkInjectorFilter(t *testing.T, hf *hcmv3.HttpFilter) *injector {
	t.Helper()
	ci := &credinjv3.CredentialInjector{}
	if err := hf.GetTypedConfig().UnmarshalTo(ci); err != nil {
		t.Fatalf("%s: %v", hf.GetName(), err)
	}
	if !hf.GetDisabled() {
		t.Errorf("%s: must be disabled in the chain and enabled per route, or every route gets the credential", hf.GetName())
	}
	if !ci.GetOverwrite() || ci.GetAllowRequestWithoutCredential() {
		t.Errorf("%s: needs overwrite: true and allow_request_without_credential: false (fail closed)", hf.GetName())
	}
	g := &genericv3.Generic{}
	if err := ci.GetCredential().GetTypedConfig().UnmarshalTo(g); err != nil {
		t.Fatalf("%s: the credential must be the Generic injector: %v", hf.GetName(), err)
	}
	if g.GetHeaderValuePrefix() != "" {
		t.Errorf("%s: header_value_prefix must be empty: the pushed value is already formatted", hf.GetName())
	}
	src := g.GetCredential().GetSdsConfig().GetApiConfigSource()
	if len(src.GetGrpcServices()) != 1 {
		t.Fatalf("%s: SDS must come from one gRPC service", hf.GetName())
	}
	return &injector{filter: hf.GetName(), secret: g.GetCredential().GetName(), header: g.GetHeader(),
		cluster: src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()}
}

// enabledOn counts, per injector filter, the routes that enable it with an
// empty FilterConfig, and fails on a per-route entry for no injector.
func enabledOn(t *testing.T, routes []*routev3.Route, byFilter map[string]*injector) {
	t.Helper()
	for _, r := range routes {
		for name, a := range r.GetTypedPerFilterConfig() {
			in := byFilter[name]
			if in == nil {
				continue
			}
			fc := &routev3.FilterConfig{}
			if err := a.UnmarshalTo(fc); err != nil {
				t.Fatalf("route for %s: %v", name, err)
			}
			if fc.GetDisabled() || fc.GetConfig().GetTypeUrl() != "" {
				t.Errorf("route for %s: use FilterConfig with config: {} to enable it", name)
			}
			in.enabled++
		}
	}
}

func http2(t *testing.T, c *clusterv3.Cluster) bool {
	t.Helper()
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	o := &upstreamhttpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		t.Fatal(err)
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// TestPushModeEnvoyConfigs: every push-mode bootstrap subscribes, with an
// injector per credential that only its routes enable, to credentials its
// tokenbroker configuration has, with the same header, from an HTTP/2
// cluster; the production one connects with a client certificate.
func TestPushModeEnvoyConfigs(t *testing.T) {
	exampleEnv(t, "https://idp.example.com/oauth/token")
	for _, pair := range pushPairs {
		t.Run(pair[0], func(t *testing.T) {
			bs, err := decodeBootstrap(pair[0])
			if err != nil {
				t.Fatal(err)
			}
			tb, err := config.Load(pair[1])
			if err != nil {
				t.Fatal(err)
			}
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range bs.GetStaticResources().GetClusters() {
				clusters[c.GetName()] = c
			}
			var hcm *hcmv3.HttpConnectionManager
			for _, l := range bs.GetStaticResources().GetListeners() {
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						hcm = &hcmv3.HttpConnectionManager{}
						if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			byFilter := map[string]*injector{}
			for _, hf := range hcm.GetHttpFilters() {
				if hf.GetTypedConfig().GetTypeUrl() == injectorType {
					in := checkInjectorFilter(t, hf)
					byFilter[in.filter] = in
				}
			}
			if len(byFilter) == 0 {
				t.Fatal("no credential_injector")
			}
			for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
				enabledOn(t, vh.GetRoutes(), byFilter)
			}
			for _, in := range byFilter {
				cr, ok := tb.Credentials[in.secret]
				switch {
				case !ok:
					t.Errorf("%s subscribes to %q, which %s does not define", in.filter, in.secret, pair[1])
				case !strings.EqualFold(cr.Header, in.header):
					t.Errorf("%s injects %s; credential %s sets %s", in.filter, in.header, in.secret, cr.Header)
				}
				if in.enabled == 0 {
					t.Errorf("%s: no route enables it", in.filter)
				}
				c := clusters[in.cluster]
				if c == nil || !http2(t, c) {
					t.Errorf("%s: SDS cluster %q missing or not HTTP/2", in.filter, in.cluster)
				}
			}
			if pair[0] == "envoy-sds/envoy.yaml" {
				// mTLS: tokenbroker authorizes the certificate's SPIFFE ID.
				ctx := &tlsv3.UpstreamTlsContext{}
				if err := clusters["tokenbroker"].GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
					t.Fatalf("tokenbroker cluster needs TLS: %v", err)
				}
				if len(ctx.GetCommonTlsContext().GetTlsCertificates()) != 1 || ctx.GetCommonTlsContext().GetValidationContext() == nil {
					t.Error("tokenbroker cluster needs a client certificate and a validation context")
				}
				if tb.Listen.TLS.ClientCAFile == "" {
					t.Error("tokenbroker.yaml must require client certificates")
				}
				for name, cr := range tb.Credentials {
					if len(cr.AllowedSources) == 0 {
						t.Errorf("credential %s: push mode in production needs allowed_sources", name)
					}
				}
			}
		})
	}
	// The compose variant's clusters are compose services on their ports.
	var c composeFile
	readYAML(t, "docker-compose/docker-compose.yaml", &c)
	if !strings.Contains(strings.Join(c.Services["envoy-sds"].Volumes, " "), "./envoy-sds.yaml:") {
		t.Error("the compose demo does not run envoy-sds.yaml")
	}
	bs, _ := decodeBootstrap("docker-compose/envoy-sds.yaml")
	for _, cl := range bs.GetStaticResources().GetClusters() {
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if _, ok := c.Services[sa.GetAddress()]; !ok {
					t.Errorf("cluster %s: %s is not a compose service", cl.GetName(), sa.GetAddress())
				}
			}
		}
	}
}

// TestPushModeExampleServesItsEnvoy runs examples/envoy-sds/tokenbroker.yaml
// in process with its TLS and SDS, and subscribes as the example Envoy
// would, over mTLS: the egress Envoy's SPIFFE ID gets every secret its
// bootstrap names, the value a Check would inject; another workload's ID,
// even declaring the Envoy's node id, gets none.
func TestPushModeExampleServesItsEnvoy(t *testing.T) {
	idp := devidp.New(devidp.Options{Clients: map[string]string{"svc-billing": billingSecret}, Lifetime: time.Hour})
	idpSrv := httptest.NewServer(idp)
	t.Cleanup(idpSrv.Close)
	exampleEnv(t, idpSrv.URL+"/oauth/token")
	ca := testcerts.NewCA(t, "envoy-ca")
	t.Setenv("TLS_DIR", exampleTLS(t, ca))
	cfg, err := config.Load("envoy-sds/tokenbroker.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := cache.New(cache.Options{ExpiryMargin: cfg.Cache.ExpiryMargin.D(), RefreshAhead: cfg.Cache.RefreshAhead})
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		if sources[name], err = credential.FromConfig(c, nil); err != nil {
			t.Fatal(err)
		}
	}
	f, err := filter.New(cfg, sources, tokens, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur envoy.Current
	cur.Store(f)
	srv := sds.New(sds.Options{Filter: f, Tokens: tokens})
	tc, err := tlsreload.ServerConfig(cfg.Listen.TLS)
	if err != nil {
		t.Fatal(err)
	}
	gs := envoy.NewGRPCServer(&cur, health.NewServer(), grpc.Creds(credentials.NewTLS(tc)))
	srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); gs.GracefulStop(); tokens.Close() })

	bs, err := decodeBootstrap("envoy-sds/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range injectorsOf(t, bs) {
		names = append(names, in.secret)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := func(spiffeID string) (map[string]string, error) {
		certPEM, keyPEM := ca.IssueSPIFFE(t, spiffeID)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{pair}})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: bs.GetNode(), TypeUrl: resource.SecretType, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		out := map[string]string{}
		for _, r := range resp.GetResources() {
			var s tlsv3.Secret
			if err := r.UnmarshalTo(&s); err != nil {
				t.Fatal(err)
			}
			out[s.GetName()] = s.GetGenericSecret().GetSecret().GetInlineString()
		}
		return out, nil
	}
	envoyValues, err := got("spiffe://cluster.local/ns/egress/sa/envoy")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		d := f.Decide(ctx, &filter.Request{Credential: n, Principal: "spiffe://cluster.local/ns/egress/sa/envoy"})
		if envoyValues[n] == "" || envoyValues[n] != d.Header.Value {
			t.Errorf("%s: pushed value differs from what a Check injects", n)
		}
	}
	// A workload no credential allows is refused as its stream opens.
	if other, err := got("spiffe://cluster.local/ns/web/sa/frontend"); status.Code(err) != codes.PermissionDenied || len(other) != 0 {
		t.Fatalf("another workload got %d secrets (%v), want PermissionDenied", len(other), err)
	}
}

func injectorsOf(t *testing.T, bs *bootstrapv3.Bootstrap) []*injector {
	t.Helper()
	var out []*injector
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetTypedConfig().GetTypeUrl() == injectorType {
						out = append(out, checkInjectorFilter(t, hf))
					}
				}
			}
		}
	}
	return out
}

// decodePatch reads one EnvoyFilter patch value into m, strictly (unknown
// fields rejected, every Any resolved), and runs Envoy's validation rules
// on it; a MERGE patch is a fragment, so only the messages packed in it
// are validated.
func decodePatch(t *testing.T, v any, m proto.Message, merge bool) {
	t.Helper()
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, m); err != nil {
		t.Fatalf("%s: %v", m.ProtoReflect().Descriptor().FullName(), err)
	}
	if merge {
		r := m.(*routev3.Route)
		for name, a := range r.GetTypedPerFilterConfig() {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := validateAll(inner); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	if err := validateAll(m); err != nil {
		t.Fatal(err)
	}
}

// TestIstioSDSEnvoyFilter: the EnvoyFilter's patches decode into Envoy's
// protos (unknown fields rejected, Anys resolved, ValidateAll); the injector
// subscribes to a credential tokenbroker defines, from the cluster the patch
// adds, and only the billing virtual host of the egress gateway enables it;
// the kustomization drops the per-request AuthorizationPolicy it replaces.
func TestIstioSDSEnvoyFilter(t *testing.T) {
	objs := loadKustomization(t, "istio-sds")
	ef := find(objs, "EnvoyFilter", "tokenbroker-sds")
	if ef == nil {
		t.Fatal("no EnvoyFilter")
	}
	gw := find(objs, "Gateway", "")
	if !labelsMatch(ef.sub("spec", "workloadSelector", "labels"), gw.sub("spec", "selector")) {
		t.Error("the EnvoyFilter does not select the egress gateway")
	}
	var cluster *clusterv3.Cluster
	var in *injector
	var routeEnables string
	for i := range ef.list("spec", "configPatches") {
		p := ef.sub("spec", "configPatches", i)
		if p.get("match", "context") != "GATEWAY" {
			t.Errorf("patch %d: context %v, want GATEWAY", i, p.get("match", "context"))
		}
		switch p.get("applyTo") {
		case "CLUSTER":
			cluster = &clusterv3.Cluster{}
			decodePatch(t, p.get("patch", "value"), cluster, false)
		case "HTTP_FILTER":
			hf := &hcmv3.HttpFilter{}
			decodePatch(t, p.get("patch", "value"), hf, false)
			in = checkInjectorFilter(t, hf)
		case "HTTP_ROUTE":
			if p.get("patch", "operation") != "MERGE" {
				t.Errorf("route patch: operation %v, want MERGE", p.get("patch", "operation"))
			}
			r := &routev3.Route{}
			decodePatch(t, p.get("patch", "value"), r, true)
			vhost := str(p.get("match", "routeConfiguration", "vhost", "name"))
			host, port, _ := strings.Cut(vhost, ":")
			if !contains(gw.list("spec", "servers", 0, "hosts"), host) || fmt.Sprint(gw.get("spec", "servers", 0, "port", "number")) != port {
				t.Errorf("route patch matches vhost %q, not a host:port of the Gateway", vhost)
			}
			for name := range r.GetTypedPerFilterConfig() {
				routeEnables = name
			}
		}
	}
	if cluster == nil || in == nil {
		t.Fatal("patches lack the SDS cluster or the injector")
	}
	if in.cluster != cluster.GetName() || !http2(t, cluster) {
		t.Errorf("the injector's SDS cluster %q is not the HTTP/2 cluster the patch adds", in.cluster)
	}
	if routeEnables != in.filter {
		t.Errorf("the route patch enables %q, the injector is %q", routeEnables, in.filter)
	}
	cm := find(objs, "ConfigMap", "tokenbroker-config")
	var tb struct {
		Credentials map[string]any `yaml:"credentials"`
	}
	if err := yaml.Unmarshal([]byte(str(cm.get("data", "tokenbroker.yaml"))), &tb); err != nil {
		t.Fatal(err)
	}
	if _, ok := tb.Credentials[in.secret]; !ok {
		t.Errorf("the injector subscribes to %q, which tokenbroker's ConfigMap does not define", in.secret)
	}
	// The kustomization deletes the AuthorizationPolicy ../istio defines.
	var k obj
	readYAML(t, "istio-sds/kustomization.yaml", &k)
	patch := str(k.get("patches", 0, "patch"))
	ap := find(objs, "AuthorizationPolicy", "")
	if ap == nil || !strings.Contains(patch, "$patch: delete") || !strings.Contains(patch, "name: "+ap.name()) {
		t.Error("istio-sds must delete the CUSTOM AuthorizationPolicy it replaces")
	}
}

func contains(l []any, s string) bool {
	for _, v := range l {
		if str(v) == s {
			return true
		}
	}
	return false
}
