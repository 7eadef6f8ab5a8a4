package sds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// secret is the SDS resource for a credential: a generic secret whose inline
// string is the header value exactly as a Check answer sets it, so Envoy's
// Generic injector (header = the credential's header, no
// header_value_prefix) injects the same bytes.
func secret(name, value string) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
			Secret: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: value}},
		}},
	}
}

// failClosed is the value pushed when a credential has no usable token (its
// usable end passed without a replacement, or none could be had) or a
// subscriber may no longer have it: an empty generic secret. What Envoy
// does with it, read in envoyproxy/envoy (main, 2026):
//
//   - source/common/secret/secret_provider_impl.cc,
//     ThreadLocalGenericSecretProvider::update: the new value is
//     Config::DataSource::read(secret, allow_empty=true, …), so an empty
//     inline_string is accepted and replaces the old value on every worker;
//   - source/extensions/http/injected_credentials/generic/generic_impl.cc,
//     GenericCredentialInjector::inject: an empty credential (after
//     stripping trailing CR/LF) returns NotFoundError("Failed to get
//     credential from secret") and sets no header;
//   - source/extensions/filters/http/credential_injector/credential_injector_filter.cc,
//     FilterConfig::injectCredential returns allow_request_without_credential
//     for a failed injection, and decodeHeaders then answers the request
//     itself with 401 "Failed to inject credential." — with
//     allow_request_without_credential: false (the default and what the
//     examples set) the request never leaves Envoy, with neither the old
//     token nor the client's own header.
//
// Withdrawing the secret instead would not work: sds_api.cc
// SdsApi::onConfigUpdate (delta overload) ignores — and ACKs — a removal,
// since SDS is a singleton subscription, and a State-of-the-World response
// without the resource never reaches SdsApi (grpc_mux_impl.cc
// onDiscoveryResponse calls onConfigUpdate only for watches with resources
// in the response). Either way Envoy would keep injecting the old token.
func failClosed(name string) *tlsv3.Secret { return secret(name, "") }

// secretName reads the name (field 1) of a serialized Secret without
// decoding the rest, which holds the token.
func secretName(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}
