// Refresh the page's data in place: fetch the same URL with ?partial=1 every few seconds and
// swap the #live region, unless the user is typing in it or has a details element open.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var every = parseInt(live.getAttribute("data-refresh-ms"), 10);
  if (!every) return;
  function busy() {
    var a = document.activeElement;
    return a && live.contains(a) && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(a.tagName);
  }
  function refresh() {
    if (document.hidden || busy()) return;
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || busy()) return;
        var open = Array.prototype.map.call(live.querySelectorAll("details[open]"),
          function (d) { return d.querySelector("summary").textContent; });
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#live");
        live.innerHTML = fresh ? fresh.innerHTML : html;
        live.querySelectorAll("details").forEach(function (d) {
          if (open.indexOf(d.querySelector("summary").textContent) >= 0) d.open = true;
        });
        live.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next tick tries again */ });
  }
  setInterval(refresh, every);
})();
