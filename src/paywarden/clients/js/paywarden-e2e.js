/*
 * paywarden-e2e.js: end-to-end card encryption for the browser.
 *
 * The card is sealed in the shopper's browser with HPKE (RFC 9180) to the
 * vault's public key, so the gateway only relays ciphertext it cannot read.
 * Plain ES2020, WebCrypto only, no dependencies, no build step: load it with
 * <script src="paywarden-e2e.js"></script> on a secure context (HTTPS or
 * localhost) and use window.PaywardenE2E.
 *
 * Suite (fixed): mode_base, DHKEM(X25519, HKDF-SHA256) 0x0020, HKDF-SHA256
 * 0x0001, AES-128-GCM 0x0001; single-shot seal, empty aad, sequence 0.
 * Wire format: payload = base64url(enc (32 bytes) || ciphertext+tag), no padding;
 * info = "paywarden card v1 " + key_id.
 *
 * API:
 *   PaywardenE2E.fetchEncryptionKey(gatewayUrl, publishableKey)
 *     -> Promise<{id, public_key: Uint8Array, expires_at: number|null, account: string|null}>
 *   PaywardenE2E.encryptCard(key, {number, exp_month, exp_year, cvc?})
 *     -> Promise<{key_id, payload}>   (key.public_key: Uint8Array or base64url)
 *   PaywardenE2E.createPaymentMethod(gatewayUrl, publishableKey, card, extra?)
 *     -> Promise<object>   (the PaymentMethod; throws an Error with Stripe's message)
 *
 * Card data never goes to the console or into an error message.
 */
(function (root) {
  "use strict";

  var SUITE = "DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM";
  var INFO_PREFIX = "paywarden card v1 ";
  var KEM_ID = 0x0020;
  var KDF_ID = 0x0001;
  var AEAD_ID = 0x0001;
  var N_SECRET = 32; // DHKEM(X25519) Nsecret
  var N_K = 16; // AES-128-GCM key length
  var N_N = 12; // AES-GCM nonce length
  var N_H = 32; // SHA-256 output length
  var MODE_BASE = 0x00;
  // RFC 8410: PKCS#8 PrivateKeyInfo prefix for a raw 32-byte X25519 private key
  // (WebCrypto imports X25519 private keys only as pkcs8 or jwk).
  var X25519_PKCS8_PREFIX = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04,
    0x20,
  ];

  var textEncoder = new TextEncoder();

  function subtle() {
    var c = root.crypto;
    if (!c || !c.subtle) {
      throw new Error("PaywardenE2E: WebCrypto is unavailable (use HTTPS or localhost)");
    }
    return c.subtle;
  }

  function ascii(s) {
    return textEncoder.encode(s);
  }

  function i2osp(n, len) {
    var out = new Uint8Array(len);
    for (var i = len - 1; i >= 0; i--) {
      out[i] = n & 0xff;
      n = n >>> 8;
    }
    return out;
  }

  function concat() {
    var total = 0;
    var i;
    for (i = 0; i < arguments.length; i++) total += arguments[i].length;
    var out = new Uint8Array(total);
    var at = 0;
    for (i = 0; i < arguments.length; i++) {
      out.set(arguments[i], at);
      at += arguments[i].length;
    }
    return out;
  }

  function toBytes(value, what) {
    if (value instanceof Uint8Array) return value;
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (typeof value === "string") return b64urlDecode(value, what);
    throw new TypeError("PaywardenE2E: " + what + " must be bytes or base64url");
  }

  function b64urlEncode(bytes) {
    var bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function b64urlDecode(text, what) {
    if (!/^[A-Za-z0-9_-]*$/.test(text)) {
      throw new TypeError("PaywardenE2E: " + (what || "value") + " is not base64url");
    }
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // --- HKDF-SHA256 (RFC 5869) over WebCrypto HMAC ------------------------------

  async function hmacSha256(key, data) {
    // An empty HMAC key equals a key of zero bytes (RFC 2104 pads keys with
    // zeros), and RFC 5869 says an absent salt is HashLen zeros: WebCrypto
    // refuses zero-length HMAC keys, so use the zero block explicitly.
    var raw = key.length === 0 ? new Uint8Array(N_H) : key;
    var k = await subtle().importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    return new Uint8Array(await subtle().sign("HMAC", k, data));
  }

  function extract(salt, ikm) {
    return hmacSha256(salt, ikm);
  }

  async function expand(prk, info, length) {
    var out = new Uint8Array(length);
    var t = new Uint8Array(0);
    var filled = 0;
    for (var counter = 1; filled < length; counter++) {
      t = await hmacSha256(prk, concat(t, info, Uint8Array.of(counter)));
      var take = Math.min(t.length, length - filled);
      out.set(t.subarray(0, take), filled);
      filled += take;
    }
    return out;
  }

  // RFC 9180 §4: LabeledExtract / LabeledExpand.
  function labeledExtract(suiteId, salt, label, ikm) {
    return extract(salt, concat(ascii("HPKE-v1"), suiteId, ascii(label), ikm));
  }

  function labeledExpand(suiteId, prk, label, info, length) {
    var labeledInfo = concat(i2osp(length, 2), ascii("HPKE-v1"), suiteId, ascii(label), info);
    return expand(prk, labeledInfo, length);
  }

  var KEM_SUITE_ID = concat(ascii("KEM"), i2osp(KEM_ID, 2));
  var HPKE_SUITE_ID = concat(ascii("HPKE"), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(AEAD_ID, 2));
  var EMPTY = new Uint8Array(0);

  // --- DHKEM(X25519, HKDF-SHA256) Encap, RFC 9180 §4.1 --------------------------

  async function encapWith(pkRm, ephemeral) {
    if (pkRm.length !== 32) throw new TypeError("PaywardenE2E: public key must be 32 bytes");
    var pkR = await subtle().importKey("raw", pkRm, { name: "X25519" }, true, []);
    var dh = new Uint8Array(
      await subtle().deriveBits({ name: "X25519", public: pkR }, ephemeral.privateKey, 256)
    );
    // RFC 9180 §7.1.4: reject an all-zero shared secret (small-order public key).
    var acc = 0;
    for (var i = 0; i < dh.length; i++) acc |= dh[i];
    if (acc === 0) throw new Error("PaywardenE2E: invalid public key");
    var enc = ephemeral.enc;
    var kemContext = concat(enc, pkRm);
    var eaePrk = await labeledExtract(KEM_SUITE_ID, EMPTY, "eae_prk", dh);
    var sharedSecret = await labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", kemContext, N_SECRET);
    return { sharedSecret: sharedSecret, enc: enc };
  }

  async function freshEphemeral() {
    // A new key pair on every call, never cached; the private half is not extractable.
    var pair = await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"]);
    var enc = new Uint8Array(await subtle().exportKey("raw", pair.publicKey));
    return { privateKey: pair.privateKey, enc: enc };
  }

  async function fixedEphemeral(skEm) {
    if (skEm.length !== 32) throw new TypeError("PaywardenE2E: private key must be 32 bytes");
    var pkcs8 = concat(Uint8Array.from(X25519_PKCS8_PREFIX), skEm);
    var sk = await subtle().importKey("pkcs8", pkcs8, { name: "X25519" }, true, ["deriveBits"]);
    var jwk = await subtle().exportKey("jwk", sk);
    return { privateKey: sk, enc: b64urlDecode(jwk.x, "jwk.x") };
  }

  // --- Key schedule (mode_base) and single-shot seal, RFC 9180 §5.1, §6.1 -------

  async function keyScheduleBase(sharedSecret, info) {
    var pskIdHash = await labeledExtract(HPKE_SUITE_ID, EMPTY, "psk_id_hash", EMPTY);
    var infoHash = await labeledExtract(HPKE_SUITE_ID, EMPTY, "info_hash", info);
    var context = concat(Uint8Array.of(MODE_BASE), pskIdHash, infoHash);
    var secret = await labeledExtract(HPKE_SUITE_ID, sharedSecret, "secret", EMPTY);
    var key = await labeledExpand(HPKE_SUITE_ID, secret, "key", context, N_K);
    var baseNonce = await labeledExpand(HPKE_SUITE_ID, secret, "base_nonce", context, N_N);
    return { key: key, baseNonce: baseNonce };
  }

  async function sealWith(ephemeral, pkRm, info, aad, pt) {
    var kem = await encapWith(pkRm, ephemeral);
    var ks = await keyScheduleBase(kem.sharedSecret, info);
    var aesKey = await subtle().importKey("raw", ks.key, { name: "AES-GCM" }, false, ["encrypt"]);
    // Sequence number 0: the nonce is base_nonce XOR 0 = base_nonce.
    var ct = new Uint8Array(
      await subtle().encrypt(
        { name: "AES-GCM", iv: ks.baseNonce, additionalData: aad, tagLength: 128 },
        aesKey,
        pt
      )
    );
    return concat(kem.enc, ct);
  }

  async function seal(pkRm, info, pt) {
    return sealWith(await freshEphemeral(), pkRm, info, EMPTY, pt);
  }

  // --- Card encryption -------------------------------------------------------

  function intField(value, name) {
    // Form inputs give strings: accept "12" as well as 12, send an integer.
    if (typeof value === "string" && /^[0-9]{1,4}$/.test(value.trim())) {
      value = parseInt(value.trim(), 10);
    }
    if (typeof value !== "number" || !Number.isInteger(value)) {
      throw new TypeError("PaywardenE2E: card." + name + " must be an integer");
    }
    return value;
  }

  function cardPlaintext(card, key) {
    if (!card || typeof card !== "object") {
      throw new TypeError("PaywardenE2E: card must be an object");
    }
    if (typeof card.number !== "string" || card.number.length === 0) {
      throw new TypeError("PaywardenE2E: card.number must be a non-empty string");
    }
    var body = {
      number: card.number,
      exp_month: intField(card.exp_month, "exp_month"),
      exp_year: intField(card.exp_year, "exp_year"),
    };
    if (card.cvc !== undefined && card.cvc !== null && card.cvc !== "") {
      if (typeof card.cvc !== "string") {
        throw new TypeError("PaywardenE2E: card.cvc must be a string");
      }
      body.cvc = card.cvc;
    }
    // Bound to the merchant and to the moment: the vault refuses a payload for
    // another account, an old one, or one it has already opened.
    if (typeof key.account === "string" && key.account.length > 0) {
      body.account = key.account;
    }
    body.iat = Math.floor(Date.now() / 1000);
    return textEncoder.encode(JSON.stringify(body));
  }

  async function encryptCard(key, card) {
    if (!key || typeof key.id !== "string" || key.id.length === 0) {
      throw new TypeError("PaywardenE2E: key.id is required");
    }
    var pkRm = toBytes(key.public_key, "key.public_key");
    var pt = cardPlaintext(card, key);
    try {
      var sealed = await seal(pkRm, ascii(INFO_PREFIX + key.id), pt);
      return { key_id: key.id, payload: b64urlEncode(sealed) };
    } finally {
      pt.fill(0);
    }
  }

  // --- Gateway calls ---------------------------------------------------------

  function baseUrl(gatewayUrl) {
    if (typeof gatewayUrl !== "string" || gatewayUrl.length === 0) {
      throw new TypeError("PaywardenE2E: gatewayUrl is required");
    }
    return gatewayUrl.replace(/\/+$/, "");
  }

  function authHeaders(publishableKey) {
    if (typeof publishableKey !== "string" || publishableKey.length === 0) {
      throw new TypeError("PaywardenE2E: publishableKey is required");
    }
    // A secret or restricted key in a web page is readable by every visitor.
    if (/^(pws|pwr|sk|rk)_/.test(publishableKey)) {
      throw new TypeError("PaywardenE2E: use a publishable key (pwp_...), never a secret key");
    }
    return { Authorization: "Bearer " + publishableKey };
  }

  async function parseResponse(response) {
    var body = null;
    try {
      body = await response.json();
    } catch (_ignored) {
      body = null;
    }
    if (!response.ok) {
      var err = body && body.error ? body.error : {};
      var error = new Error(
        typeof err.message === "string" && err.message
          ? err.message
          : "PaywardenE2E: request failed with HTTP " + response.status
      );
      error.type = err.type;
      error.code = err.code;
      error.decline_code = err.decline_code;
      error.param = err.param;
      error.status = response.status;
      throw error;
    }
    if (body === null || typeof body !== "object") {
      throw new Error("PaywardenE2E: the gateway answered with no JSON object");
    }
    return body;
  }

  async function fetchEncryptionKey(gatewayUrl, publishableKey) {
    var response = await root.fetch(baseUrl(gatewayUrl) + "/v1/paywarden/encryption_keys", {
      method: "GET",
      headers: authHeaders(publishableKey),
      credentials: "omit",
      cache: "no-store",
    });
    var body = await parseResponse(response);
    var first = Array.isArray(body.data) ? body.data[0] : undefined;
    if (!first || typeof first.id !== "string" || typeof first.public_key !== "string") {
      throw new Error("PaywardenE2E: the gateway offered no encryption key");
    }
    if (first.suite !== SUITE) {
      throw new Error("PaywardenE2E: unsupported encryption suite");
    }
    var publicKey = b64urlDecode(first.public_key, "public_key");
    if (publicKey.length !== 32) throw new Error("PaywardenE2E: public key must be 32 bytes");
    return {
      id: first.id,
      public_key: publicKey,
      expires_at: typeof first.expires_at === "number" ? first.expires_at : null,
      account: typeof first.account === "string" ? first.account : null,
    };
  }

  // Stripe-style form encoding of nested objects: a[b][c]=v, a[0]=v.
  function appendForm(form, prefix, value) {
    if (value === undefined || value === null) return;
    if (Array.isArray(value)) {
      value.forEach(function (item, index) {
        appendForm(form, prefix + "[" + index + "]", item);
      });
    } else if (typeof value === "object") {
      Object.keys(value).forEach(function (name) {
        appendForm(form, prefix ? prefix + "[" + name + "]" : name, value[name]);
      });
    } else {
      form.append(prefix, String(value));
    }
  }

  async function createPaymentMethod(gatewayUrl, publishableKey, card, extra) {
    if (extra !== undefined && extra !== null) {
      Object.keys(extra).forEach(function (name) {
        // The card travels only encrypted: refuse anything that could carry it in clear.
        if (name === "type" || name === "card" || name.indexOf("card[") === 0) {
          throw new TypeError("PaywardenE2E: extra may not set '" + name + "'");
        }
      });
    }
    var key = await fetchEncryptionKey(gatewayUrl, publishableKey);
    var encrypted = await encryptCard(key, card);
    var form = new URLSearchParams();
    form.append("type", "card");
    form.append("card[encrypted][key_id]", encrypted.key_id);
    form.append("card[encrypted][payload]", encrypted.payload);
    appendForm(form, "", extra || {});
    var response = await root.fetch(baseUrl(gatewayUrl) + "/v1/payment_methods", {
      method: "POST",
      headers: Object.assign(authHeaders(publishableKey), {
        "Content-Type": "application/x-www-form-urlencoded",
      }),
      body: form.toString(),
      credentials: "omit",
      cache: "no-store",
    });
    return parseResponse(response);
  }

  // --- Device signals (fraud engine) ---------------------------------------

  async function sha256Hex(text) {
    var digest = await root.crypto.subtle.digest("SHA-256", textEncoder.encode(text));
    return Array.from(new Uint8Array(digest))
      .map(function (b) {
        return b.toString(16).padStart(2, "0");
      })
      .join("");
  }

  // A rendering fingerprint: the same hardware and driver stack draws the same
  // pixels. Only its hash leaves the page.
  async function canvasHash() {
    try {
      var canvas = root.document.createElement("canvas");
      canvas.width = 220;
      canvas.height = 40;
      var ctx = canvas.getContext("2d");
      if (!ctx) return null;
      ctx.textBaseline = "top";
      ctx.font = "16px 'Arial'";
      ctx.fillStyle = "#f60";
      ctx.fillRect(100, 1, 62, 20);
      ctx.fillStyle = "#069";
      ctx.fillText("Paywarden \u2713 device", 2, 15);
      return await sha256Hex(canvas.toDataURL());
    } catch (_ignored) {
      return null;
    }
  }

  function webglRenderer() {
    try {
      var gl = root.document.createElement("canvas").getContext("webgl");
      if (!gl) return null;
      var info = gl.getExtension("WEBGL_debug_renderer_info");
      return String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    } catch (_ignored) {
      return null;
    }
  }

  // Stable signals only: nothing that changes with a browser update or a
  // resized window. No cookies, no storage, nothing personal.
  async function deviceSignals() {
    var nav = root.navigator || {};
    var scr = root.screen || {};
    return {
      screen: scr.width && scr.height ? scr.width + "x" + scr.height : null,
      color_depth: typeof scr.colorDepth === "number" ? scr.colorDepth : null,
      timezone: (function () {
        try {
          return Intl.DateTimeFormat().resolvedOptions().timeZone || null;
        } catch (_ignored) {
          return null;
        }
      })(),
      languages: Array.isArray(nav.languages) ? nav.languages.slice(0, 10) : [],
      platform: typeof nav.platform === "string" ? nav.platform : null,
      hardware_concurrency:
        typeof nav.hardwareConcurrency === "number" ? nav.hardwareConcurrency : null,
      // A string: it can be fractional (0.5), and the API takes no floats.
      device_memory: typeof nav.deviceMemory === "number" ? String(nav.deviceMemory) : null,
      max_touch_points: typeof nav.maxTouchPoints === "number" ? nav.maxTouchPoints : null,
      canvas_hash: await canvasHash(),
      webgl_renderer: webglRenderer(),
    };
  }

  // Sends the signals to the gateway, which returns a signed device token for
  // the fraud engine (its use on confirm arrives with the engine's decision).
  async function deviceToken(gatewayUrl, publishableKey) {
    var signals = await deviceSignals();
    var response = await root.fetch(baseUrl(gatewayUrl) + "/v1/paywarden/device_sessions", {
      method: "POST",
      headers: Object.assign(authHeaders(publishableKey), {
        "Content-Type": "application/json",
      }),
      body: JSON.stringify({ signals: signals }),
      credentials: "omit",
      cache: "no-store",
    });
    var body = await parseResponse(response);
    return body.token;
  }

  root.PaywardenE2E = Object.freeze({
    SUITE: SUITE,
    fetchEncryptionKey: fetchEncryptionKey,
    encryptCard: encryptCard,
    createPaymentMethod: createPaymentMethod,
    deviceSignals: deviceSignals,
    deviceToken: deviceToken,
    // FOR TESTS ONLY: reproduces RFC 9180 vectors with a caller-chosen ephemeral
    // private key. Production code must use encryptCard, which makes a fresh
    // ephemeral key per call; reusing an ephemeral key breaks HPKE's security.
    _internal: Object.freeze({
      sealWithEphemeral: async function (pkR, skE, info, pt, aad) {
        var ephemeral = await fixedEphemeral(toBytes(skE, "skE"));
        return sealWith(
          ephemeral,
          toBytes(pkR, "pkR"),
          toBytes(info, "info"),
          aad === undefined ? EMPTY : toBytes(aad, "aad"),
          toBytes(pt, "pt")
        );
      },
      b64urlEncode: b64urlEncode,
      b64urlDecode: b64urlDecode,
    }),
  });
})(typeof globalThis !== "undefined" ? globalThis : window);
