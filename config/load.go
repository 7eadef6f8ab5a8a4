package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unique"

	"go.yaml.in/yaml/v3"
)

// workBudget bounds the nodes one file may make the decoder visit. Aliases
// and merge keys can make a small document expand exponentially ("billion
// laughs"); an alias-free document visits fewer nodes than it has bytes, so
// this cap only ever stops expansion, and keeps work linear in input size.
func workBudget(data []byte) int { return 1<<16 + 4*len(data) }

// Load reads, parses, defaults and validates the configuration file at path.
// An unreadable file yields a wrapped *fs.PathError; a file with problems
// yields Errors listing all of them.
func Load(path string) (*Config, error) {
	data, err := readLimited(path, maxConfigFile)
	if _, ok := errors.AsType[*fs.PathError](err); ok {
		return nil, fmt.Errorf("config: %w", err)
	} else if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err) // too large
	}
	return withLoadGC(func() (*Config, error) { return Parse(path, data) })
}

// Parse parses, defaults and validates configuration data; file names the
// source in messages. In any scalar value ${VAR} is replaced from the
// environment and $${ stands for a literal ${. A key that is absent or null
// takes its default, while an explicit "" is kept (so listen.admin: ""
// turns the admin listener off). Problems come back as Errors.
func Parse(file string, data []byte) (*Config, error) { return parse(file, data, true) }

// parse is Parse; stream false parses the file whole (tests compare both).
func parse(file string, data []byte, stream bool) (*Config, error) {
	fresh := func() (*decoder, *Config) {
		d := &decoder{
			file:    cmp.Or(file, "<config>"),
			lines:   map[string]int{},
			tainted: map[string]bool{},
			failed:  map[string]bool{},
			merging: map[*yaml.Node]bool{},
			merged:  map[*yaml.Node][][2]*yaml.Node{},
			budget:  workBudget(data),
		}
		cfg := &Config{File: file}
		cfg.setDefaults()
		return d, cfg
	}
	d, cfg := fresh()
	if !stream || !d.parseStreamed(data, cfg) { // stream.go
		d, cfg = fresh()
		if root := d.parse(data); root != nil {
			d.decode(root, reflect.ValueOf(cfg).Elem(), "")
		}
	}
	d.validate(cfg)
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	return cfg, nil
}

// decoder walks a yaml.Node tree into a Config by reflection, so the set of
// known keys is exactly the set of yaml tags on the structs.
type decoder struct {
	file    string
	errs    Errors
	lines   map[string]int                 // field path -> line of its key, for every key present
	tainted map[string]bool                // field paths whose value came from ${VAR} or a file: never quote them
	failed  map[string]bool                // field paths already reported, so validation does not pile on
	merging map[*yaml.Node]bool            // mappings being merged, to stop a merge key that includes itself
	merged  map[*yaml.Node][][2]*yaml.Node // memo for pairs
	budget  int                            // nodes left to visit

	// continued is the node of a streamed section's slice (stream.go): a
	// list there is appended to the slices before it, not replaced.
	continued *yaml.Node
}

// fail reports a problem found while decoding a field, which validation
// then leaves alone. Callers must not put a value in the message unless it
// is known to be harmless: see Error.
func (d *decoder) fail(line int, field, format string, args ...any) {
	d.failed[field] = true
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// parse returns the root node of the single YAML document in data, or nil.
func (d *decoder) parse(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, extra yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err != io.EOF {
			d.yamlError(err, data)
		}
		return nil
	}
	switch err := dec.Decode(&extra); {
	case err == nil:
		d.fail(extra.Line, "", "only one YAML document is allowed")
	case err != io.EOF:
		d.yamlError(err, data)
	}
	if len(doc.Content) != 1 {
		return nil
	}
	return doc.Content[0]
}

// yamlError turns a yaml.v3 syntax error into an Error. The parser's
// messages describe syntax and never quote scalars, but its line numbers
// need help: yaml.v3 reports parser (not scanner) errors 0-based, leaves the
// line out for problems on line 1 and for bad characters, and has none for
// an unknown anchor.
func (d *decoder) yamlError(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		n, after, _ := strings.Cut(rest, ": ")
		if l, err := strconv.Atoi(n); err == nil {
			line, msg = l, after
			if parserProblems[msg] {
				line++
			}
		}
	} else if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		line = lineAt(data, bytes.Index(data, []byte("*"+strings.TrimSuffix(name, "' referenced"))))
	} else if i := bytes.IndexFunc(data, badChar); i >= 0 {
		line = lineAt(data, i)
	}
	d.fail(line, "", "invalid YAML: %s", msg)
}

// parserProblems are the yaml.v3 messages whose line is off by one.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected key":              true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found undefined tag handle":             true,
	"found duplicate %YAML directive":        true,
	"found duplicate %TAG directive":         true,
	"found incompatible YAML document":       true,
}

// badChar reports whether YAML's reader rejects r (YAML 1.2 c-printable).
func badChar(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r' || r == 0x85:
		return false
	case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError:
		return true
	}
	return r >= 0xd800 && r < 0xe000 || r == 0xfffe || r == 0xffff
}

// lineAt returns the 1-based line of byte offset i, or 0 if i < 0.
func lineAt(data []byte, i int) int {
	if i < 0 {
		return 0
	}
	return 1 + bytes.Count(data[:i], []byte("\n"))
}

// spend charges one unit of work, reporting (once) when the budget runs out.
func (d *decoder) spend(n *yaml.Node, path string) bool {
	d.budget--
	if d.budget == -1 {
		d.fail(n.Line, path, "document too large or too deeply aliased")
	}
	return d.budget >= 0
}

var (
	durationType = reflect.TypeFor[Duration]()
	secretType   = reflect.TypeFor[Secret]()
)

// sharedFields are the string settings that many credentials or routes of
// one file usually repeat (one IdP's token URL, its scopes, the header and
// format, a route's credential name): they are stored once (unique.Make),
// which at 100,000 credentials saves megabytes. Secrets never are.
var sharedFields = map[string]bool{
	"type": true, "token_url": true, "auth_method": true, "scopes": true, "audience": true,
	"header": true, "format": true, "provider": true, "tenant": true, "domain": true,
	"realm": true, "resource": true, "signing_alg": true, "assertion_audience": true,
	"subject_token_type": true, "requested_token_type": true, "ca_file": true,
	"allowed_sources": true, "credential": true, "path_prefix": true, "methods": true,
	"remove_headers": true,
}

// sharedField reports whether the string at field path (…name or
// …name[i]) is one of sharedFields.
func sharedField(path string) bool {
	name := path[strings.LastIndexByte(path, '.')+1:]
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	return sharedFields[name]
}

// decode stores node n into v, whose field path is path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if !d.spend(n, path) {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(fresh(v.Type()))
		}
		v = v.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // absent: keep the default
	}
	if l, ok := v.Addr().Interface().(interface{ setLine(int) }); ok {
		l.setLine(n.Line)
	}
	switch {
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Map:
		d.decodeMap(n, v, path)
	case v.Kind() == reflect.Slice:
		d.decodeSlice(n, v, path)
	case n.Kind != yaml.ScalarNode:
		d.fail(n.Line, path, "must be %s, not %s", describe(v.Type()), describe(n))
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if !d.expect(n, yaml.MappingNode, v.Type(), path) {
		return
	}
	fields := yamlFields(v.Type())
	for _, kv := range d.pairs(n, path) {
		name, p, ok := d.key(kv[0], path)
		if !ok {
			continue
		}
		i, known := fields[name]
		if !known {
			d.fail(kv[0].Line, p, "unknown field")
			continue
		}
		d.decode(kv[1], v.Field(i), p)
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if !d.expect(n, yaml.MappingNode, v.Type(), path) {
		return
	}
	pairs := d.pairs(n, path)
	if limit := maxEntries(path); len(pairs) > limit {
		d.fail(n.Line, path, "more than %d entries", limit)
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for _, kv := range pairs {
		name, p, ok := d.key(kv[0], path)
		if !ok {
			continue
		}
		elem := fresh(v.Type().Elem())
		d.decode(kv[1], elem, p)
		if path == "credentials" {
			name = unique.Make(name).Value() // the routes that name it share the string
		}
		v.SetMapIndex(reflect.ValueOf(name).Convert(v.Type().Key()), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if !d.expect(n, yaml.SequenceNode, v.Type(), path) {
		return
	}
	if limit := maxEntries(path); len(n.Content) > limit {
		d.fail(n.Line, path, "more than %d entries", limit)
		return
	}
	s, base := reflect.MakeSlice(v.Type(), 0, len(n.Content)), 0
	if n == d.continued {
		s, base = v, v.Len()
	}
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, base+i)
		d.lines[p] = item.Line
		elem := fresh(v.Type().Elem())
		d.decode(item, elem, p)
		s = reflect.Append(s, elem)
	}
	v.Set(s)
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.expand(n, path)
	if !ok {
		return
	}
	if len(s) > maxScalar {
		d.fail(n.Line, path, "longer than %d KiB", maxScalar>>10) // never quote it: it may be a secret
		return
	}
	var err error
	switch {
	case v.Type() == durationType:
		var dur time.Duration
		if dur, err = time.ParseDuration(s); err == nil {
			v.SetInt(int64(dur))
		}
	case v.Kind() == reflect.String:
		if v.Type() != secretType && sharedField(path) {
			s = unique.Make(s).Value()
		}
		v.SetString(s)
	case v.CanInt():
		var i int64
		if i, err = strconv.ParseInt(s, 10, 64); err != nil {
			i, err = strconv.ParseInt(s, 0, 64) // 0x10, 1_000
		}
		if err == nil && v.OverflowInt(i) {
			err = strconv.ErrRange
		}
		if err == nil {
			v.SetInt(i)
		}
	case v.CanFloat():
		var f float64
		if f, err = strconv.ParseFloat(s, 64); err == nil {
			v.SetFloat(f)
		}
	case v.Kind() == reflect.Bool:
		var b bool
		if b, err = strconv.ParseBool(s); err == nil {
			v.SetBool(b)
		}
	default:
		panic("config: no decoder for " + v.Type().String()) // a new field type needs a case here
	}
	if err != nil {
		// Never quote s: it may be a secret, and err from strconv would quote it.
		d.fail(n.Line, path, "must be %s", describe(v.Type()))
	}
}

// expect reports whether n has the kind that type t needs.
func (d *decoder) expect(n *yaml.Node, kind yaml.Kind, t reflect.Type, path string) bool {
	if n.Kind != kind {
		d.fail(n.Line, path, "must be %s, not %s", describe(t), describe(n))
	}
	return n.Kind == kind
}

// key checks a mapping key, records its line and returns it with its field path.
func (d *decoder) key(k *yaml.Node, path string) (name, field string, ok bool) {
	line := k.Line
	if k.Kind == yaml.AliasNode {
		k = k.Alias
	}
	if k.Kind != yaml.ScalarNode {
		d.fail(line, path, "keys must be strings, not %s", describe(k))
		return "", "", false
	}
	if len(k.Value) > maxKey {
		d.fail(line, path, "a key is longer than %d bytes", maxKey) // it may be a misplaced secret: not quoted
		return "", "", false
	}
	field = join(path, k.Value)
	if first, dup := d.lines[field]; dup {
		d.fail(line, field, "duplicate key (first at line %d)", first)
		return "", "", false
	}
	d.lines[field] = line
	return k.Value, field, true
}

// join appends a key to a field path: path.key, or path["key"] when the key
// would make the path ambiguous (a credential named "a.b") or span lines.
func join(path, key string) string {
	plain := key != ""
	for _, c := range key {
		plain = plain && (c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9')
	}
	switch {
	case !plain:
		return fmt.Sprintf("%s[%q]", path, key)
	case path == "":
		return key
	}
	return path + "." + key
}

// pairs lists the key/value nodes of mapping n with YAML merge keys
// (<<: *anchor) expanded. As in YAML 1.1, explicit keys win over merged
// ones and earlier merge sources win over later ones.
// Results for anchored mappings are memoized so that nested merges cost
// linear, not exponential, time.
func (d *decoder) pairs(n *yaml.Node, path string) [][2]*yaml.Node {
	if p, ok := d.merged[n]; ok {
		return p
	}
	var own, merged [][2]*yaml.Node
	d.merging[n] = true
	defer delete(d.merging, n)
	for i := 0; i+1 < len(n.Content) && d.spend(n, path); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
			own = append(own, [2]*yaml.Node{k, v})
			continue
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		sources := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		for _, src := range sources {
			if src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			switch {
			case src.Kind != yaml.MappingNode:
				d.fail(k.Line, path, "merge key (<<) needs a mapping or a list of mappings")
			case d.merging[src]:
				d.fail(k.Line, path, "merge key (<<) includes its own mapping")
			default:
				merged = append(merged, d.pairs(src, path)...)
			}
		}
	}
	seen := map[string]bool{}
	for _, kv := range own {
		seen[kv[0].Value] = true
	}
	for _, kv := range merged {
		if !seen[kv[0].Value] {
			seen[kv[0].Value] = true
			own = append(own, kv)
		}
	}
	if n.Anchor != "" {
		// Only an anchored mapping can be reached twice (through aliases);
		// memoising every mapping would keep the whole node tree alive.
		d.merged[n] = own
	}
	return own
}

// expand returns scalar n's value with ${VAR} replaced from the environment
// and $${ replaced by a literal ${.
func (d *decoder) expand(n *yaml.Node, path string) (string, bool) {
	s := n.Value
	if !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	ok := true
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), ok
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1] + "${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 || !envName(s[i+2:i+end]) {
			// The text after ${ may be part of a secret: do not echo it.
			d.fail(n.Line, path, "malformed ${VAR} reference (write $${ for a literal ${)")
			return "", false
		}
		name := s[i+2 : i+end]
		if val, set := os.LookupEnv(name); set {
			b.WriteString(val)
			d.tainted[path] = true
		} else {
			d.fail(n.Line, path, "environment variable %s is not set", name)
			ok = false
		}
		s = s[i+end+1:]
	}
}

// envName reports whether s is a portable environment variable name.
func envName(s string) bool {
	for i, c := range s {
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

// fresh returns a settable new value of type t, with a pointer allocated and
// defaults applied, ready to be decoded into.
func fresh(t reflect.Type) reflect.Value {
	v := reflect.New(t).Elem()
	if t.Kind() == reflect.Pointer {
		v.Set(reflect.New(t.Elem()))
	}
	p := v
	if t.Kind() != reflect.Pointer {
		p = v.Addr()
	}
	if def, ok := p.Interface().(interface{ setDefaults() }); ok {
		def.setDefaults()
	}
	return v
}

// yamlFields maps yaml key names to field indexes of struct type t.
func yamlFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		fields[cmp.Or(name, strings.ToLower(f.Name))] = i
	}
	return fields
}

// describe names what a Go type expects, or what a YAML node is, for messages.
func describe(x any) string {
	switch x := x.(type) {
	case *yaml.Node:
		switch x.Kind {
		case yaml.MappingNode:
			return "a mapping"
		case yaml.SequenceNode:
			return "a list"
		case yaml.ScalarNode:
			return "a scalar"
		}
		return "an alias"
	case reflect.Type:
		switch {
		case x == durationType:
			return "a duration such as 30s or 5m"
		case x.Kind() == reflect.Pointer:
			return describe(x.Elem())
		case x.Kind() == reflect.String:
			return "a string"
		case x.Kind() >= reflect.Int && x.Kind() <= reflect.Int64:
			return "an integer"
		case x.Kind() == reflect.Float32 || x.Kind() == reflect.Float64:
			return "a number"
		case x.Kind() == reflect.Bool:
			return "true or false"
		case x.Kind() == reflect.Slice:
			return "a list"
		}
		return "a mapping"
	}
	return "a value"
}
