package examples_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// Every extension the shipped Envoy configurations name, so that each
	// typed_config's Any resolves.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// envoyConfigs lists every shipped Envoy bootstrap: YAML files under
// examples/ that hold static_resources.
func envoyConfigs(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "\nstatic_resources:") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// decodeBootstrap reads Envoy YAML the strict way: YAML → JSON → protojson
// with unknown fields rejected, then Envoy's own validation rules
// (ValidateAll) on the bootstrap and on every message packed in an Any.
func decodeBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("to json: %w", err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := validateAll(bs); err != nil {
		return nil, err
	}
	return bs, nil
}

type validator interface{ ValidateAll() error }

// validateAll runs ValidateAll on m and recursively on every Any inside it:
// the generated validators stop at an Any.
func validateAll(m proto.Message) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	var firstErr error
	var walk func(protoreflect.Message)
	walk = func(pm protoreflect.Message) {
		pm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
				return true
			}
			visit := func(child protoreflect.Message) {
				if a, ok := child.Interface().(*anypb.Any); ok {
					if a.GetTypeUrl() == "" && pm.Descriptor().FullName() == "envoy.config.route.v3.FilterConfig" {
						return // config: {} turns a disabled filter on for a route; Envoy reads it as exactly that
					}
					inner, err := a.UnmarshalNew()
					if err != nil {
						firstErr = fmt.Errorf("typed_config %s: %w", a.GetTypeUrl(), err)
						return
					}
					if err := validateAll(inner); err != nil && firstErr == nil {
						firstErr = err
					}
					return
				}
				walk(child)
			}
			switch {
			case fd.IsList():
				for i := range v.List().Len() {
					visit(v.List().Get(i).Message())
				}
			case fd.IsMap():
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
						visit(mv.Message())
						return true
					})
				}
			default:
				visit(v.Message())
			}
			return firstErr == nil
		})
	}
	walk(m.ProtoReflect())
	return firstErr
}

func TestEnvoyConfigsDecodeAndValidate(t *testing.T) {
	files := envoyConfigs(t)
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			bs, err := decodeBootstrap(f)
			if err != nil {
				t.Fatal(err)
			}
			// protojson's whitespace is randomised on purpose: compact it.
			var buf bytes.Buffer
			if err := json.Compact(&buf, []byte(protojson.Format(bs))); err != nil {
				t.Fatal(err)
			}
			text := buf.String()
			if isPushMode(text) {
				return // push mode (SDS) has no ext_authz: TestPushModeEnvoyConfigs checks it
			}
			// What every shipped Envoy must say about tokenbroker.
			for _, want := range []string{
				`"@type":"type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"`,
				`"timeout":"0.500s"`,
				`"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"`,
			} {
				if !strings.Contains(text, want) {
					t.Errorf("missing %s", want)
				}
			}
			if strings.Contains(text, `"failureModeAllow":true`) {
				t.Error("failure_mode_allow must stay false")
			}
			checkPathsAndAuthz(t, bs)
		})
	}
}

// checkPathsAndAuthz: every HTTP connection manager normalises paths the way
// tokenbroker decides on them (README "Path rules"), and every ext_authz
// filter sends raw headers and answers 503 when tokenbroker cannot.
func checkPathsAndAuthz(t *testing.T, bs *bootstrapv3.Bootstrap) {
	t.Helper()
	hcms, authzs := 0, 0
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, nf := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if nf.GetTypedConfig().UnmarshalTo(hcm) != nil {
					continue
				}
				hcms++
				if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
					t.Errorf("listener %s: normalize_path and merge_slashes must be true", l.GetName())
				}
				switch hcm.GetPathWithEscapedSlashesAction() {
				case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
				default:
					t.Errorf("listener %s: path_with_escaped_slashes_action %v", l.GetName(), hcm.GetPathWithEscapedSlashesAction())
				}
				for _, hf := range hcm.GetHttpFilters() {
					ea := &extauthzv3.ExtAuthz{}
					if hf.GetTypedConfig().UnmarshalTo(ea) != nil {
						continue
					}
					authzs++
					if !ea.GetEncodeRawHeaders() {
						t.Errorf("listener %s: ext_authz needs encode_raw_headers: true", l.GetName())
					}
					if ea.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
						t.Errorf("listener %s: ext_authz status_on_error %v, want 503", l.GetName(), ea.GetStatusOnError())
					}
				}
			}
		}
	}
	if hcms == 0 || authzs == 0 {
		t.Errorf("found %d connection managers, %d ext_authz filters", hcms, authzs)
	}
}

// TestEnvoyValidationRejects proves the check can fail: an unknown field,
// an unresolvable typed_config, and a value Envoy's rules refuse.
func TestEnvoyValidationRejects(t *testing.T) {
	good, err := os.ReadFile("docker-compose/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string][2]string{
		"unknown field":   {"failure_mode_allow: false", "failure_mode_alow: false"},
		"unknown type":    {"ext_authz.v3.ExtAuthz\n", "ext_authz.v3.ExtAuthzz\n"},
		"rule violation":  {"port_value: 10000", "port_value: 70000"},
		"empty cluster":   {"cluster_name: tokenbroker}", "cluster_name: \"\"}"},
		"bad stat prefix": {"stat_prefix: egress", "stat_prefix: \"\""},
	} {
		bad := strings.Replace(string(good), edit[0], edit[1], 1)
		if bad == string(good) {
			t.Fatalf("%s: edit did not apply", name)
		}
		p := filepath.Join(t.TempDir(), "envoy.yaml")
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := decodeBootstrap(p)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}
