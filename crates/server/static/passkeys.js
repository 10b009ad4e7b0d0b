// healthgate: passkeys (WebAuthn). Loaded only by the pages with a passkey
// button, from this server only (the CSP allows no inline script).
//
// A form marked data-passkey="create" or "get" is a passkey button. On
// submit: POST the form's csrf_token (and label) to its data-options URL,
// which begins the ceremony and answers its options as JSON; ask the
// browser's authenticator (navigator.credentials.create / get); put the
// credential, as JSON with its binary fields in base64url, into the form's
// hidden "credential" field; submit the form as any other. Without this
// script (or without WebAuthn) the forms stay hidden and the page says a
// passkey needs JavaScript.
(function () {
  "use strict";

  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) {
      b64 += "=";
    }
    var raw = atob(b64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) {
      bytes[i] = raw.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) {
      raw += String.fromCharCode(bytes[i]);
    }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (c) {
      var copy = Object.assign({}, c);
      copy.id = toBytes(c.id);
      return copy;
    });
  }

  // The options as the server sends them (webauthn-rs JSON) → as the
  // browser takes them.
  function creationOptions(json) {
    var o = Object.assign({}, json.publicKey);
    o.challenge = toBytes(o.challenge);
    o.user = Object.assign({}, o.user, { id: toBytes(o.user.id) });
    if (o.excludeCredentials) {
      o.excludeCredentials = withIds(o.excludeCredentials);
    }
    return { publicKey: o };
  }

  function requestOptions(json) {
    var o = Object.assign({}, json.publicKey);
    o.challenge = toBytes(o.challenge);
    if (o.allowCredentials) {
      o.allowCredentials = withIds(o.allowCredentials);
    }
    // A button, not autofill: the person asked for it now.
    return { publicKey: o };
  }

  function created(cred) {
    var r = cred.response;
    return {
      id: cred.id,
      rawId: toText(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toText(r.attestationObject),
        clientDataJSON: toText(r.clientDataJSON),
        transports: typeof r.getTransports === "function" ? r.getTransports() : undefined
      },
      extensions: {}
    };
  }

  function asserted(cred) {
    var r = cred.response;
    return {
      id: cred.id,
      rawId: toText(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toText(r.authenticatorData),
        clientDataJSON: toText(r.clientDataJSON),
        signature: toText(r.signature),
        userHandle: r.userHandle ? toText(r.userHandle) : null
      },
      extensions: {}
    };
  }

  function wire(form) {
    var kind = form.getAttribute("data-passkey");
    var message = form.querySelector("[data-passkey-message]");
    var button = form.querySelector("button[type=submit]");
    var field = form.querySelector("input[name=credential]");

    function say(text) {
      message.textContent = text;
      message.hidden = !text;
      button.disabled = false;
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      say("");
      button.disabled = true;
      var body = new URLSearchParams();
      ["csrf_token", "label"].forEach(function (name) {
        var input = form.querySelector("input[name=" + name + "]");
        if (input) {
          body.append(name, input.value);
        }
      });
      fetch(form.getAttribute("data-options"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json" },
        body: body
      })
        .then(function (response) {
          return response.json().then(
            function (json) {
              if (!response.ok) {
                throw new Error(json.error || "");
              }
              return json;
            },
            function () {
              throw new Error(response.status === 403
                ? "Your session has ended. Reload the page and try again."
                : "");
            }
          );
        })
        .then(function (json) {
          return kind === "create"
            ? navigator.credentials.create(creationOptions(json)).then(created)
            : navigator.credentials.get(requestOptions(json)).then(asserted);
        })
        .then(function (credential) {
          field.value = JSON.stringify(credential);
          form.submit();
        })
        .catch(function (error) {
          if (error && error.name === "NotAllowedError") {
            say("No passkey was given: the request was cancelled or timed out. Try again.");
          } else if (error && error.name === "InvalidStateError") {
            say("This device has a passkey for your account already.");
          } else if (error && error.name === "Error" && error.message) {
            say(error.message);
          } else {
            say("The passkey could not be used here. Try again, or use another way.");
          }
        });
    });
  }

  var forms = document.querySelectorAll("form[data-passkey]");
  var note = document.getElementById("passkey-needs-script");
  if (!window.PublicKeyCredential || !navigator.credentials) {
    if (note) {
      note.textContent = "This browser cannot use passkeys.";
    }
    return;
  }
  if (note) {
    note.hidden = true;
  }
  forms.forEach(function (form) {
    form.hidden = false;
    wire(form);
  });
})();
