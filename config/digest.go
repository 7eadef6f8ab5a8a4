package config

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
	"reflect"
	"slices"
)

// Digest is a keyed hash that stands in for part of a configuration once
// the parts themselves are gone: equal digests (within one process) mean
// equal contents.
type Digest [sha256.Size]byte

// CredentialsDigest is a digest of the whole `credentials:` section: every
// field of every credential, the secrets included, as loaded. A reload
// compares it instead of keeping 100,000 parsed credentials alive after
// their sources and the filter are built: any change to any field, a
// rotated secret too, makes a different digest. It is keyed with the
// process's random valueKey (identity.go), like an inline static value in
// an identity, so a digest read from memory confirms no guess of a secret;
// digests are therefore comparable only within one process.
func (c *Config) CredentialsDigest() Digest {
	d := newDigester()
	d.len(len(c.Credentials))
	names := make([]string, 0, len(c.Credentials))
	for name := range c.Credentials {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		d.str(name)
		d.value(reflect.ValueOf(c.Credentials[name]))
	}
	return d.sum()
}

// RoutesDigest is a digest of the `routes:` section, in order, every field
// (the line each starts on too, as a whole-configuration comparison saw it),
// keyed as CredentialsDigest is.
func (c *Config) RoutesDigest() Digest {
	d := newDigester()
	d.value(reflect.ValueOf(c.Routes))
	return d.sum()
}

// digester encodes values into a buffer it hashes in large writes: a
// 100,000-credential file is millions of small fields, and a write (and an
// allocation) per field made a reload's digest several times slower.
type digester struct {
	h   hash.Hash
	buf []byte
}

func newDigester() *digester {
	return &digester{h: hmac.New(sha256.New, valueKey), buf: make([]byte, 0, 8<<10)}
}

func (d *digester) flush() {
	d.h.Write(d.buf)
	d.buf = d.buf[:0]
}

func (d *digester) byte(b byte) { d.buf = append(d.buf, b) }

func (d *digester) uint(n uint64) { d.buf = binary.BigEndian.AppendUint64(d.buf, n) }

func (d *digester) len(n int) { d.uint(uint64(n)) }

// str writes s length-prefixed, so adjacent strings never run together.
func (d *digester) str(s string) {
	d.len(len(s))
	d.buf = append(d.buf, s...)
	if len(d.buf) >= 4<<10 {
		d.flush()
	}
}

func (d *digester) sum() Digest {
	d.flush()
	var out Digest
	d.h.Sum(out[:0])
	return out
}

// value writes v field by field, through reflection so a field added to
// Credential or Route is covered without anyone remembering to add it here.
// Every variable-length value is length-prefixed and every nil marked, so
// different values never write the same bytes.
func (d *digester) value(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			d.byte(0)
			return
		}
		d.byte(1)
		d.value(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			d.value(v.Field(i))
		}
	case reflect.String:
		d.str(v.String())
	case reflect.Bool:
		if v.Bool() {
			d.byte(1)
		} else {
			d.byte(0)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		d.uint(uint64(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.uint(v.Uint())
	case reflect.Float32, reflect.Float64:
		d.uint(math.Float64bits(v.Float()))
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			d.byte(0)
			return
		}
		d.byte(1)
		d.len(v.Len())
		for i := range v.Len() {
			d.value(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			d.byte(0)
			return
		}
		d.byte(1)
		d.len(v.Len())
		keys := v.MapKeys()
		slices.SortFunc(keys, compareKeys)
		for _, k := range keys {
			d.value(k)
			d.value(v.MapIndex(k))
		}
	default:
		// A kind Credential does not use today (func, chan, complex): fail
		// loudly in tests rather than let a field go unnoticed by reloads.
		panic(fmt.Sprintf("config: digest of %s is not defined", v.Type()))
	}
}

// compareKeys orders map keys: strings (every map in the configuration is
// keyed by string) and, for completeness, integers.
func compareKeys(a, b reflect.Value) int {
	switch a.Kind() {
	case reflect.String:
		return cmp.Compare(a.String(), b.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return cmp.Compare(a.Int(), b.Int())
	}
	panic(fmt.Sprintf("config: digest of a map keyed by %s is not defined", a.Type()))
}
