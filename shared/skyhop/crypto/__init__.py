"""Cryptography of a job, in three rooms:

- :mod:`skyhop.crypto.sealing`: the versioned frame header and AES-256-GCM
  segment sealing (a chunk cannot be swapped, replayed, reordered or truncated);
- :mod:`skyhop.crypto.keys`: job key pairs and per-chunk keys, data-key
  wrapping (:class:`KeyWrapper`; KMS in :mod:`skyhop.crypto.kms`), control tokens
  and event keys;
- :mod:`skyhop.crypto.tls`: the per-job CA, its certificates, mutual-TLS contexts.

Everything is re-exported here, so ``from skyhop import crypto; crypto.X`` works
for every name. Keys are never logged: nothing here formats a key into a message.

Who holds what, and so what each can do (README's "Security" has the whole
model and the tests that show it):

- **The control plane** holds the job CA's key, its own client certificate, and
  the job's master token, from which every gateway's control token
  (:func:`gateway_token`) and event key (:func:`gateway_event_key`) derive. It
  is the only party that can command a gateway (a control API pins the
  fingerprint of its client certificate) and the only one that can check any
  gateway's events. It never keeps the data key's private half after launch.
- **A destination gateway** holds the job's private key (X25519; KMS-wrapped
  on its way to a VM), its own certificate, token and event key. It opens what
  is sealed to it and writes only under its own destination location.
- **A source gateway** holds the job's public key only: it can seal for the
  destinations but open nothing, and reads only under its source location.
- **A relay** holds no job key at all: it forwards sealed frames it cannot
  open, and its certificate admits it to its next hops' data ports, not to
  anyone's control API; its token and event key are its own.
- **A cloud VM's user data or metadata** holds no key or token: a boot
  configuration carries the job CA's certificate, the control plane's client
  certificate fingerprint and a one-time enrolment token (the control plane
  keeps its SHA-256); the gateway makes its own TLS key at boot and receives
  its certificate and secrets over mutual TLS (:mod:`skyhop.enrolment`), or,
  controlled through queues, sealed to an X25519 key it made (:func:`seal_to`)
  on its own control queue, once its token checked and was spent (on AWS that
  queue denies every EC2 instance but the gateway's own: another job's gateway
  can neither read nor drain it).
- **A sender of queue messages** (requests or events) holds no key of any job.
  A request is admitted only for the configured locations, reply queues and caps;
  an event without the MAC of a current gateway of its job (the control plane
  checks it first, under :func:`gateway_event_key`) changes nothing, and even a
  correctly signed ``chunk_verified`` counts only from one of the job's
  destinations, for a chunk in flight at its current attempt.
- **A local user** of the machine running the CLI cannot read the job's keys,
  tokens or certificates: ``SKYHOP_HOME`` is 0700 and its files 0600, and a job's
  secrets are removed when the job ends, however it ends; nor can they steer a
  copy through a symlink planted in a local destination tree.
- **Anyone else** on the network sees TLS 1.3 with a per-job CA and, inside it,
  AES-256-GCM segments whose associated data binds job, object, chunk, segment
  and last flag; a connection that does not finish its mutual-TLS handshake
  within seconds is closed. Events on a queue are HMAC-SHA256 signed by their
  gateway; a forged or replayed-into-another-job event changes nothing.

Not defended here: a compromised control-plane host or cloud account (they
hold the CA and the master token), a destination reading what it writes.
"""

from skyhop.crypto.keys import (
    EPHEMERAL_BYTES,
    KeyWrapper,
    LocalKeyWrapper,
    decode_key,
    encode_key,
    event_mac,
    event_mac_matches,
    gateway_event_key,
    gateway_token,
    generate_job_key,
    job_public_key,
    new_control_token,
    open_key_wrapper,
    open_sealed,
    receiver_chunk_key,
    register_key_wrapper,
    role_key_fields,
    seal_to,
    sender_chunk_key,
    token_matches,
)
from skyhop.crypto.sealing import (
    FLAG_LAST,
    FLAG_PLAIN,
    FLAG_ZSTD,
    HEADER,
    HEADER_SIZE,
    KEY_BYTES,
    MAGIC,
    MAX_PAYLOAD,
    MAX_SEGMENT,
    NONCE_BYTES,
    TAG_BYTES,
    WIRE_VERSION,
    FrameHeader,
    FrameType,
    SegmentOpener,
    SegmentSealer,
    generate_data_key,
    job_digest,
    open_chunk,
    parse_header,
    seal_chunk,
)
from skyhop.crypto.tls import (
    IssuedCert,
    JobCA,
    cert_fingerprint,
    client_context,
    der_fingerprint,
    load_chain,
    public_key_pem,
    self_signed,
    server_context,
)

__all__ = [
    "EPHEMERAL_BYTES",
    "FLAG_LAST",
    "FLAG_PLAIN",
    "FLAG_ZSTD",
    "FrameHeader",
    "FrameType",
    "HEADER",
    "HEADER_SIZE",
    "IssuedCert",
    "JobCA",
    "KEY_BYTES",
    "KeyWrapper",
    "LocalKeyWrapper",
    "MAGIC",
    "MAX_PAYLOAD",
    "MAX_SEGMENT",
    "NONCE_BYTES",
    "SegmentOpener",
    "SegmentSealer",
    "TAG_BYTES",
    "WIRE_VERSION",
    "cert_fingerprint",
    "client_context",
    "der_fingerprint",
    "gateway_token",
    "decode_key",
    "encode_key",
    "event_mac",
    "event_mac_matches",
    "gateway_event_key",
    "open_sealed",
    "seal_to",
    "generate_data_key",
    "generate_job_key",
    "job_digest",
    "job_public_key",
    "load_chain",
    "new_control_token",
    "open_chunk",
    "open_key_wrapper",
    "parse_header",
    "public_key_pem",
    "receiver_chunk_key",
    "register_key_wrapper",
    "role_key_fields",
    "seal_chunk",
    "self_signed",
    "sender_chunk_key",
    "server_context",
    "token_matches",
]
