/* The web chat page: the rasa-webchat socket.io protocol, plus the `history` event
 * (the server's transcript, replayed after a reload) and acknowledged sends: every
 * message carries its own id, and is resent with it until the gateway has it, which
 * drops the copies. */
(function () {
  "use strict";

  var SESSION_KEY = "webchat.session_id";
  var ACK_TIMEOUT_MS = 10000;
  var RETRY_MS = 3000;
  var TYPING_MS = 15000;

  var list = document.getElementById("messages");
  var form = document.getElementById("composer");
  var input = document.getElementById("text");
  var statusLine = document.getElementById("status");

  var sessionId = readSession();
  var confirmed = false;
  var pending = new Map(); // message id -> {id, text, item}
  var typingItem = null;
  var typingTimer = null;

  var socket = io({ path: new URL("socket.io", document.baseURI).pathname });

  socket.on("connect", function () {
    setStatus("Connecting…");
    socket.emit("session_request", { session_id: sessionId });
  });

  socket.on("session_confirm", function (data) {
    var id = data && data.session_id ? data.session_id : data;
    if (typeof id !== "string") return;
    if (id !== sessionId) {
      // A new session: whatever is on screen belongs to another one.
      sessionId = id;
      writeSession(id);
      clearMessages();
    }
    confirmed = true;
    setStatus("Online");
    pending.forEach(emitUtterance);
  });

  socket.on("history", function (data) {
    if (!data || !Array.isArray(data.turns)) return;
    clearMessages();
    var offered = [];
    data.turns.forEach(function (turn) {
      if (turn.role === "customer") {
        addMessage("customer", titleOf(turn.text, offered), turn.at);
        offered = [];
      } else {
        var item = addMessage(turn.role === "agent" ? "agent" : "bot", turn.text, turn.at);
        if (turn.image) addImage(item, turn.image);
        offered = turn.quick_replies || [];
        if (offered.length) addQuickReplies(item, offered);
      }
    });
    disableAnsweredQuickReplies();
    pending.forEach(function (entry) { list.appendChild(entry.item); });
    scrollToEnd();
  });

  socket.on("bot_uttered", function (data) {
    if (!data) return;
    hideTyping();
    var attachment = data.attachment;
    if (attachment && attachment.type === "image" && attachment.payload) {
      addImage(addMessage("bot", "", null), attachment.payload.src);
      return;
    }
    var item = addMessage("bot", typeof data.text === "string" ? data.text : "", null);
    var replies = data.quick_replies || data.buttons;
    if (Array.isArray(replies) && replies.length) addQuickReplies(item, replies);
  });

  socket.on("disconnect", function (reason) {
    confirmed = false;
    setStatus("Reconnecting…");
    // socket.io only reconnects by itself when the server did not end the session.
    if (reason === "io server disconnect") socket.connect();
  });

  socket.on("connect_error", function () {
    setStatus("Cannot reach the chat, retrying…");
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text, text);
  });

  function send(text, shown) {
    var entry = { id: newId(), text: text, item: addMessage("customer", shown, null) };
    entry.item.classList.add("pending");
    setNote(entry.item, "Sending…");
    pending.set(entry.id, entry);
    if (confirmed) emitUtterance(entry);
    showTyping();
  }

  function emitUtterance(entry) {
    var payload = { message: entry.text, customData: { message_id: entry.id },
                    session_id: sessionId };
    socket.timeout(ACK_TIMEOUT_MS).emit("user_uttered", payload, function (err, ack) {
      if (!pending.has(entry.id)) return;
      var status = !err && ack ? ack.status : "unavailable";
      if (status === "accepted" || status === "duplicate") {
        pending.delete(entry.id);
        entry.item.classList.remove("pending");
        setNote(entry.item, "");
      } else if (status === "unavailable") {
        setTimeout(function () {
          if (confirmed && pending.has(entry.id)) emitUtterance(entry);
        }, RETRY_MS);
      } else {
        pending.delete(entry.id);
        entry.item.classList.remove("pending");
        entry.item.classList.add("failed");
        setNote(entry.item, "Not sent" + (ack && ack.reason ? ": " + ack.reason : ""));
        hideTyping();
      }
    });
  }

  function addMessage(role, text, at) {
    var item = document.createElement("li");
    item.className = "message from-" + role;
    var previous = lastMessage();
    if (role !== "customer" && !(previous && previous.classList.contains("from-" + role))) {
      var sender = document.createElement("p");
      sender.className = "sender";
      sender.textContent = role === "agent" ? "Agent" : "Assistant";
      item.appendChild(sender);
    } else if (role === "customer") {
      var you = document.createElement("span");
      you.className = "visually-hidden";
      you.textContent = "You: ";
      item.appendChild(you);
    }
    if (text) {
      var bubble = document.createElement("div");
      bubble.className = "bubble text";
      appendLinkified(bubble, text);
      item.appendChild(bubble);
    }
    var when = at ? new Date(at * 1000) : new Date();
    item.title = when.toLocaleString();
    list.insertBefore(item, typingItem && typingItem.parentNode === list ? typingItem : null);
    scrollToEnd();
    return item;
  }

  // A run of messages from the same sender is labelled once.
  function lastMessage() {
    var last = list.lastElementChild;
    if (last && last === typingItem) last = last.previousElementSibling;
    return last;
  }

  function addImage(item, src) {
    if (typeof src !== "string" || !src) return;
    var image = document.createElement("img");
    image.src = src;
    image.alt = "Image from the assistant";
    image.loading = "lazy";
    image.addEventListener("load", scrollToEnd);
    item.appendChild(image);
  }

  function addQuickReplies(item, replies) {
    var group = document.createElement("div");
    group.className = "quick-replies";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Suggested replies");
    replies.forEach(function (reply) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = reply.title;
      button.dataset.payload = reply.payload;
      button.addEventListener("click", function () {
        choose(group, button);
        send(reply.payload, reply.title);
      });
      group.appendChild(button);
    });
    item.appendChild(group);
  }

  function choose(group, chosen) {
    Array.prototype.forEach.call(group.querySelectorAll("button"), function (button) {
      button.disabled = true;
      button.setAttribute("aria-pressed", button === chosen ? "true" : "false");
    });
  }

  // Replayed history: a question already answered keeps its buttons, but not live.
  function disableAnsweredQuickReplies() {
    var groups = list.querySelectorAll(".quick-replies");
    Array.prototype.forEach.call(groups, function (group) {
      var item = group.parentNode;
      if (item.nextElementSibling) choose(group, null);
    });
  }

  // The transcript keeps a pressed button's payload; show its title, as on screen.
  function titleOf(text, offered) {
    for (var i = 0; i < offered.length; i++) {
      if (offered[i].payload === text) return offered[i].title;
    }
    return text;
  }

  function appendLinkified(element, text) {
    var pattern = /https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]]/g;
    var last = 0;
    var match;
    while ((match = pattern.exec(text)) !== null) {
      element.appendChild(document.createTextNode(text.slice(last, match.index)));
      var link = document.createElement("a");
      link.href = match[0];
      link.textContent = match[0];
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      element.appendChild(link);
      last = match.index + match[0].length;
    }
    element.appendChild(document.createTextNode(text.slice(last)));
  }

  function setNote(item, text) {
    var note = item.querySelector(".note");
    if (!note) {
      note = document.createElement("span");
      note.className = "note";
      item.appendChild(note);
    }
    note.textContent = text;
  }

  function showTyping() {
    if (!typingItem) {
      typingItem = document.createElement("li");
      typingItem.className = "message from-bot typing";
      typingItem.setAttribute("aria-label", "The assistant is typing");
      var bubble = document.createElement("div");
      bubble.className = "bubble";
      bubble.textContent = "…";
      typingItem.appendChild(bubble);
    }
    list.appendChild(typingItem);
    scrollToEnd();
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, TYPING_MS);
  }

  function hideTyping() {
    clearTimeout(typingTimer);
    if (typingItem && typingItem.parentNode) typingItem.parentNode.removeChild(typingItem);
  }

  function clearMessages() {
    while (list.firstChild) list.removeChild(list.firstChild);
  }

  function scrollToEnd() {
    list.scrollTop = list.scrollHeight;
  }

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  // Storage can be off (private modes, policies): the chat then lasts one page view.
  function readSession() {
    try { return window.localStorage.getItem(SESSION_KEY); } catch (e) { return null; }
  }

  function writeSession(id) {
    try { window.localStorage.setItem(SESSION_KEY, id); } catch (e) { /* see above */ }
  }
})();
