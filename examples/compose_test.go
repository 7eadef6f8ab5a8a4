package examples_test

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/config"
)

// TestExampleTokenbrokerConfigsLoad loads every tokenbroker configuration
// shipped under examples/ (files named tokenbroker*.yaml) exactly as
// `tokenbroker serve` would; TestKubernetesManifests loads the ConfigMap's.
func TestExampleTokenbrokerConfigsLoad(t *testing.T) {
	exampleEnv(t, "https://idp.example.com/oauth/token")
	var files []string
	_ = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "tokenbroker") && strings.HasSuffix(d.Name(), ".yaml") {
			files = append(files, path)
		}
		return err
	})
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		if _, err := config.Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type composeFile struct {
	Services map[string]struct {
		Image   string
		Build   struct{ Context, Target string }
		Command []string
		Volumes []string
	}
}

// TestComposeFile: `docker-compose config -q` accepts the demo (and rejects a
// broken copy), and its parts point at each other: build targets exist in
// the Dockerfile, mounted files exist, Envoy's clusters name compose services
// on the ports those services listen on.
func TestComposeFile(t *testing.T) {
	const file = "docker-compose/docker-compose.yaml"
	dc := need(t, "docker-compose")
	if out, err := exec.Command(dc, "-f", file, "config", "-q").CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	broken := filepath.Join(t.TempDir(), "docker-compose.yaml")
	orig, _ := os.ReadFile(file)
	_ = os.WriteFile(broken, []byte(strings.Replace(string(orig), "depends_on: [envoy]", "depends_on: {envoy: {condition: when_pigs_fly}}", 1)), 0o644)
	if out, err := exec.Command(dc, "-f", broken, "config", "-q").CombinedOutput(); err == nil {
		t.Fatalf("docker-compose accepted a broken file: %s", out)
	}

	var c composeFile
	readYAML(t, file, &c)
	for _, svc := range []string{"devidp", "tokenbroker", "echo", "envoy", "client"} {
		if _, ok := c.Services[svc]; !ok {
			t.Errorf("service %s missing", svc)
		}
	}
	if !strings.HasPrefix(c.Services["envoy"].Image, "envoyproxy/envoy:") {
		t.Errorf("envoy image %q is not the official one", c.Services["envoy"].Image)
	}
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range c.Services {
		if s.Build.Target != "" {
			if !regexp.MustCompile(`(?m)^FROM \S+ AS ` + regexp.QuoteMeta(s.Build.Target) + `$`).Match(dockerfile) {
				t.Errorf("%s: build target %q not in the Dockerfile", name, s.Build.Target)
			}
			if filepath.Clean(filepath.Join("docker-compose", s.Build.Context)) != ".." {
				t.Errorf("%s: build context %q is not the repository root", name, s.Build.Context)
			}
		}
		for _, v := range s.Volumes {
			host, _, _ := strings.Cut(v, ":")
			if _, err := os.Stat(filepath.Join("docker-compose", host)); err != nil {
				t.Errorf("%s: mounts %s: %v", name, host, err)
			}
		}
	}

	// Envoy's clusters → compose services and their listening ports.
	bs, err := decodeBootstrap("docker-compose/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := config.Load("docker-compose/tokenbroker.yaml")
	if err == nil {
		t.Fatal("tokenbroker.yaml loaded without DEMO_CLIENT_SECRET") // proves the secret comes from the environment
	}
	t.Setenv("DEMO_CLIENT_SECRET", "demo-secret")
	if tb, err = config.Load("docker-compose/tokenbroker.yaml"); err != nil {
		t.Fatal(err)
	}
	echoConf, _ := os.ReadFile("docker-compose/echo.conf")
	listens := map[string]string{
		"tokenbroker": portOf(tb.Listen.GRPC),
		"echo":        regexp.MustCompile(`listen (\d+);`).FindStringSubmatch(string(echoConf))[1],
	}
	for _, cl := range bs.GetStaticResources().GetClusters() {
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if _, ok := c.Services[sa.GetAddress()]; !ok {
					t.Errorf("cluster %s: %s is not a compose service", cl.GetName(), sa.GetAddress())
				}
				if want := listens[sa.GetAddress()]; fmt.Sprint(sa.GetPortValue()) != want {
					t.Errorf("cluster %s: port %d, %s listens on %s", cl.GetName(), sa.GetPortValue(), sa.GetAddress(), want)
				}
			}
		}
	}
	// tokenbroker's token_url → the devidp service and the port it listens on.
	idpCmd := c.Services["devidp"].Command
	idpListen := idpCmd[slices.Index(idpCmd, "--listen")+1]
	for name, cr := range tb.Credentials {
		if want := "http://devidp:" + portOf(idpListen) + "/oauth/token"; cr.TokenURL != want {
			t.Errorf("credential %s: token_url %s, want %s", name, cr.TokenURL, want)
		}
	}
	// The client script calls the ports the servers listen on.
	script, _ := os.ReadFile("docker-compose/client.sh")
	for _, want := range []string{"http://envoy:10000", "http://tokenbroker:" + portOf(tb.Listen.HTTP) + "/", "http://devidp:" + portOf(idpListen) + "/stats"} {
		if !strings.Contains(string(script), want) {
			t.Errorf("client.sh does not call %s", want)
		}
	}
}

func portOf(hostport string) string {
	_, port, _ := strings.Cut(hostport, ":")
	return port
}

// TestDockerfile checks the image recipe: multi-stage, static binary,
// distroless/scratch, non-root, a healthcheck that uses the binary itself.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 3 {
		t.Fatalf("want a build stage and two runtime stages, got %v", froms)
	}
	last := froms[len(froms)-1][1]
	if !strings.HasPrefix(last, "gcr.io/distroless/static") && last != "scratch" {
		t.Errorf("final stage %s is not distroless static or scratch", last)
	}
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532:65532", "HEALTHCHECK", `"/tokenbroker", "health"`, "./cmd/tokenbroker", "./cmd/devidp"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	// Every runtime stage runs as a numeric non-root user: Kubernetes'
	// runAsNonRoot cannot verify a user name such as "nonroot".
	users := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) != len(froms)-1 {
		t.Errorf("%d runtime stages, %d USER lines", len(froms)-1, len(users))
	}
	for _, u := range users {
		uid, _, _ := strings.Cut(u[1], ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("USER %s is not a numeric non-root user", u[1])
		}
	}
}

// TestComposeEchoUpstream runs the demo's echo upstream (echo.conf) in a
// real nginx: it shows the Authorization it received, shortened.
func TestComposeEchoUpstream(t *testing.T) {
	conf, err := os.ReadFile("docker-compose/echo.conf")
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	site := strings.Replace(string(conf), "listen 8080;", "listen "+addr+";", 1)
	if site == string(conf) {
		t.Fatal("echo.conf no longer listens on 8080")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	startNginxWith(t, dir)
	for auth, want := range map[string]string{
		"Bearer devidp.abcdefghijklmnop": "upstream got: Authorization: Bearer devidp.abcde...\n",
		"":                               "upstream got: Authorization: (none)\n",
		"Basic Zm9vOmJhcg==":             "upstream got: Authorization: (not a bearer token)\n",
	} {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/x?y=1", nil)
		req.Host = "orders.example.com"
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "upstream got: POST orders.example.com/v1/x?y=1\n"+want {
			t.Errorf("Authorization %q: echo answered %q", auth, body)
		}
	}
}
