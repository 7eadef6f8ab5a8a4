package config

import (
	"bytes"
	"io"
	"reflect"

	"go.yaml.in/yaml/v3"
)

// A YAML node tree is about 14 times the size of its text (yaml.Node is
// 150 bytes, and every key and value is one), so parsing a file of 100,000
// credentials at once holds ~280 MB of nodes for a 20 MB file. The large
// sections — credentials and routes — are instead parsed a slice of
// entries at a time, each slice's nodes garbage once decoded, when the
// file's shape makes that exact: block style at the top level, no anchors
// (an alias may reach across slices), one document, plain line endings.
// Anything else, and any YAML error in a slice, falls back to parsing the
// whole file, so messages are exactly those of the whole parse.

// streamSections are the top-level keys parsed in slices.
var streamSections = map[string]bool{"credentials": true, "routes": true}

// entriesPerSlice bounds the entries parsed at once: small enough that a
// slice's nodes are a few MB, large enough that the per-slice work is noise.
const entriesPerSlice = 1000

// section is one top-level key of a block-style file.
type section struct {
	key        string
	line       int // 1-based line of the key
	start, end int // byte offsets of its lines, key line included
	streamed   bool
}

// lineEnd is the offset just past the line of data that starts at off: after
// its '\n', or the end of data for a last line without one.
func lineEnd(data []byte, off int) int {
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(data)
}

// splitTop returns the top-level sections of data, or ok false when the
// file is not plainly block style at the top level.
func splitTop(data []byte) (secs []section, ok bool) {
	if bytes.IndexByte(data, '&') >= 0 || bytes.IndexByte(data, '\r') >= 0 || bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) ||
		bytes.IndexFunc(data, badChar) >= 0 { // also where no slice would read it (a comment): the whole parse refuses it
		return nil, false
	}
	seen := map[string]bool{}
	line := 0
	for off := 0; off < len(data); {
		line++
		end := lineEnd(data, off)
		l := data[off:end]
		switch c := l[0]; {
		case c == ' ' || c == '#' || c == '\n' || c == '-' && !bytes.HasPrefix(l, []byte("---")):
			// inside the current section (a top-level sequence item, "- x",
			// at column 0 belongs to the key above it)
			if len(secs) == 0 && c != '#' && c != '\n' {
				return nil, false
			}
		case c == '\t' || c == '%' || c == '.' || c == '-':
			return nil, false // tabs, directives, document markers
		default:
			key, rest, found := bytes.Cut(bytes.TrimRight(l, "\n"), []byte(":"))
			if !found || !plainKey(key) || len(rest) > 0 && rest[0] != ' ' {
				return nil, false // not "key:": a flow or quoted root, a plain scalar, …
			}
			if seen[string(key)] {
				return nil, false // a duplicate: the whole parse reports it
			}
			seen[string(key)] = true
			if len(secs) > 0 {
				secs[len(secs)-1].end = off
			}
			r := bytes.TrimSpace(rest)
			// A big section is streamed when its value starts on the next line.
			secs = append(secs, section{key: string(key), line: line, start: off,
				streamed: streamSections[string(key)] && (len(r) == 0 || r[0] == '#')})
		}
		off = end
	}
	if len(secs) > 0 {
		secs[len(secs)-1].end = len(data)
	}
	return secs, true
}

func plainKey(k []byte) bool {
	for _, c := range k {
		if !(c == '_' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return len(k) > 0
}

// parseStreamed decodes data into cfg section by section, the big ones in
// slices. It reports false, having decoded nothing it could not redo, when
// the file must be parsed whole; the caller then starts over.
func (d *decoder) parseStreamed(data []byte, cfg *Config) bool {
	secs, ok := splitTop(data)
	if !ok || !anyStreamed(secs) {
		return false
	}
	root := reflect.ValueOf(cfg).Elem()
	fields := yamlFields(root.Type())
	// The other sections are parsed as one document in which each streamed
	// section is only its newlines, so every line keeps its number.
	rest := make([]byte, 0, len(data)/8)
	rest = append(rest, data[:secs[0].start]...) // comments before the first key
	for _, s := range secs {
		if !s.streamed {
			rest = append(rest, data[s.start:s.end]...)
			continue
		}
		for range bytes.Count(data[s.start:s.end], []byte("\n")) {
			rest = append(rest, '\n')
		}
	}
	if n, ok := d.parseSlice(rest, 0); !ok {
		return false
	} else if n != nil {
		d.decode(n, root, "")
	}
	rest = nil
	for _, s := range secs {
		if !s.streamed {
			continue
		}
		if !d.streamSection(data, s, root.Field(fields[s.key])) {
			return false
		}
	}
	return true
}

func anyStreamed(secs []section) bool {
	for _, s := range secs {
		if s.streamed {
			return true
		}
	}
	return false
}

// streamSection decodes one big section entriesPerSlice entries at a time.
// An entry starts at a line indented as the first entry is (for routes, a
// "-" there); a line less indented, or a "-" where a key was expected, is a
// shape only the whole parse judges.
func (d *decoder) streamSection(data []byte, s section, field reflect.Value) bool {
	body := data[s.start:s.end]
	keyEnd := bytes.IndexByte(body, '\n') + 1
	if keyEnd == 0 {
		return false
	}
	header := []byte(s.key + ":\n")
	// Find the entries' starts and their indentation.
	var starts []int // offsets in body
	var lines []int  // their 1-based line numbers
	indent, seq := -1, false
	line := s.line
	for off := keyEnd; off < len(body); {
		line++
		end := lineEnd(body, off)
		l := body[off:end]
		t := bytes.TrimLeft(l, " ")
		if len(t) > 0 && t[0] != '\n' && t[0] != '#' {
			in := len(l) - len(t)
			switch {
			case indent < 0:
				if t[0] == '?' || t[0] == ':' {
					return false
				}
				indent, seq = in, t[0] == '-'
				// Stream only what is plainly entries: a sequence's items
				// for a list, keys for a mapping. Anything else (a tag, an
				// anchor, an alias, a flow or block scalar: "routes:\n  ! ")
				// is decoded whole, which alone knows a null from an empty
				// list.
				if seq != (field.Kind() == reflect.Slice) || bytes.IndexByte([]byte("!&*[]{}|>%@`,"), t[0]) >= 0 {
					return false
				}
				starts, lines = append(starts, off), append(lines, line)
			case in < indent, in == indent && (t[0] == '?' || t[0] == ':'):
				return false // less indented, or an explicit key whose value a split could part from it
			case in == indent && (t[0] == '-') != seq:
				return false
			case in == indent:
				starts, lines = append(starts, off), append(lines, line)
			}
		}
		off = end
	}
	if len(starts) == 0 {
		// Comments only: as null, the default stays.
		return true
	}
	if _, _, ok := d.key(&yaml.Node{Kind: yaml.ScalarNode, Value: s.key, Line: s.line}, ""); !ok {
		return true
	}
	if limit := maxEntries(s.key); len(starts) > limit {
		d.fail(lines[0], s.key, "more than %d entries", limit)
		return true
	}
	// Sized once: growing by appends would leave up to twice the room.
	switch t := field.Type(); {
	case t.Kind() == reflect.Map && field.IsNil():
		field.Set(reflect.MakeMapWithSize(t, len(starts)))
	case t.Kind() == reflect.Slice && field.Len() == 0:
		field.Set(reflect.MakeSlice(t, 0, len(starts)))
	}
	buf := make([]byte, 0, 1<<16)
	for i := 0; i < len(starts); i += entriesPerSlice {
		j := min(i+entriesPerSlice, len(starts))
		end := len(body)
		if j < len(starts) {
			end = starts[j]
		}
		buf = append(append(buf[:0], header...), body[starts[i]:end]...)
		// The slice's first entry is on line 2 of buf; it is on lines[i].
		n, ok := d.parseSlice(buf, lines[i]-2)
		if !ok || n == nil || n.Kind != yaml.MappingNode || len(n.Content) != 2 {
			return false
		}
		if sliceParsed != nil {
			sliceParsed(s.key)
		}
		d.continued = n.Content[1] // appended to what the slices before it decoded
		d.decode(n.Content[1], field, s.key)
		d.continued = nil
	}
	return true
}

// sliceParsed, when set (by tests only), is called for every slice of a
// streamed section, so a test can tell streaming from the fallback.
var sliceParsed func(section string)

// parseSlice parses one document of data whose line 1 is line shift+1 of
// the file. ok is false on any YAML problem: the whole parse reports it.
func (d *decoder) parseSlice(data []byte, shift int) (*yaml.Node, bool) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err == io.EOF {
		return nil, true
	} else if err != nil {
		return nil, false
	}
	if len(doc.Content) != 1 {
		return nil, true
	}
	if shift != 0 {
		shiftLines(doc.Content[0], shift)
	}
	return doc.Content[0], true
}

func shiftLines(n *yaml.Node, by int) {
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}
