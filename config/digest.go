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
	h := hmac.New(sha256.New, valueKey)
	putLen(h, len(c.Credentials))
	names := make([]string, 0, len(c.Credentials))
	for name := range c.Credentials {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		put(h, name)
		digestValue(h, reflect.ValueOf(c.Credentials[name]))
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// RoutesDigest is a digest of the `routes:` section, in order, every field
// (the line each starts on too, as a whole-configuration comparison saw it),
// keyed as CredentialsDigest is.
func (c *Config) RoutesDigest() Digest {
	h := hmac.New(sha256.New, valueKey)
	digestValue(h, reflect.ValueOf(c.Routes))
	var d Digest
	h.Sum(d[:0])
	return d
}

// digestValue writes v to h field by field, through reflection so a field
// added to Credential is covered without anyone remembering to add it here.
// Every variable-length value is length-prefixed and every nil marked, so
// different values never write the same bytes (the rule put follows).
func digestValue(h hash.Hash, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			h.Write([]byte{0})
			return
		}
		h.Write([]byte{1})
		digestValue(h, v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			digestValue(h, v.Field(i))
		}
	case reflect.String:
		put(h, v.String())
	case reflect.Bool:
		if v.Bool() {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		putLen(h, int(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		h.Write(binary.BigEndian.AppendUint64(nil, v.Uint()))
	case reflect.Float32, reflect.Float64:
		h.Write(binary.BigEndian.AppendUint64(nil, math.Float64bits(v.Float())))
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			h.Write([]byte{0})
			return
		}
		h.Write([]byte{1})
		putLen(h, v.Len())
		for i := range v.Len() {
			digestValue(h, v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			h.Write([]byte{0})
			return
		}
		h.Write([]byte{1})
		putLen(h, v.Len())
		keys := v.MapKeys()
		slices.SortFunc(keys, compareKeys)
		for _, k := range keys {
			digestValue(h, k)
			digestValue(h, v.MapIndex(k))
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
