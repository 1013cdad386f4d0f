/* vpp console: page controllers over the JSON API (same-origin cookie) and /api/stream (server-sent events). */
(function () {
  "use strict";
  var page = document.body.dataset.page, role = document.body.dataset.role;
  var $ = function (sel) { return document.querySelector(sel); };

  function api(method, url, body) {
    var init = {method: method, credentials: "same-origin", headers: {"X-Requested-With": "vpp-console", "Accept": "application/json"}};
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(url, init).then(function (r) {
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("logged out"); }
      return r.json().then(function (data) { if (!r.ok) { var e = new Error(data.error || r.statusText); e.status = r.status; throw e; } return data; });
    });
  }
  function live(events, path, handlers, depth) {
    var url = "/api/stream?events=" + events.join(",") + (path ? "&path=" + encodeURIComponent(path) : "") +
              (depth !== undefined ? "&depth=" + depth : "");
    var source = new EventSource(url), dot = $("#live");
    source.onopen = function () { if (dot) dot.className = "live on"; };
    source.onerror = function () { if (dot) dot.className = "live off"; };
    Object.keys(handlers).forEach(function (kind) {
      source.addEventListener(kind, function (ev) { handlers[kind](JSON.parse(ev.data)); });
    });
    window.addEventListener("pagehide", function () { source.close(); });
    return source;
  }
  function kilo(v) { return v === null || v === undefined ? "" : (v / 1000).toFixed(1); }
  function num(v, d) { return v === null || v === undefined ? "" : Number(v).toFixed(d === undefined ? 0 : d); }
  function time(iso) { return iso ? new Date(iso).toISOString().slice(11, 19) : ""; }
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }
  function debounce(fn, ms) { var t = null; return function () { clearTimeout(t); t = setTimeout(fn, ms); }; }
  function msOf(iso) { return new Date(iso).getTime(); }

  // -- fleet tree ------------------------------------------------------------------------------
  function treePage() {
    var table = $("#tree"), body = table.querySelector("tbody"), root = table.dataset.path || "";
    var expanded = {}, rows = {};
    function fill(tr, n) {
      tr.cells[1].textContent = time(n.window_end);
      tr.cells[2].textContent = kilo(n.battery_w); tr.cells[3].textContent = kilo(n.grid_w);
      tr.cells[4].textContent = kilo(n.energy_available_wh); tr.cells[5].textContent = num(n.soc_pct, 1);
      tr.cells[6].textContent = n.devices_known; tr.cells[7].textContent = n.devices_reporting; tr.cells[8].textContent = n.estimated_devices;
    }
    function row(n, top) {
      var tr = document.createElement("tr"), first = document.createElement("td");
      tr.dataset.path = n.node_path; tr.dataset.depth = n.depth;
      var pad = document.createElement("span"); pad.className = "indent"; pad.style.width = (n.depth - top) * 1.2 + "em";
      var toggle = document.createElement("button"); toggle.className = "toggle"; toggle.textContent = expanded[n.node_path] ? "−" : "+";
      toggle.title = "expand"; toggle.onclick = function () { expanded[n.node_path] = !expanded[n.node_path]; load(); };
      var link = document.createElement("a"); link.href = "/nodes/" + n.node_path; link.textContent = n.depth === top ? n.node_path : n.node_path.split("/").pop();
      first.appendChild(pad); first.appendChild(toggle); first.appendChild(document.createTextNode(" ")); first.appendChild(link);
      tr.appendChild(first);
      for (var i = 0; i < 8; i++) cell(tr, "");
      fill(tr, n); rows[n.node_path] = tr;
      return tr;
    }
    function fetchRows() {
      var paths = [root].concat(Object.keys(expanded).filter(function (p) { return expanded[p]; }));
      Promise.all(paths.map(function (p) {
        return api("GET", "/api/tree?depth=1" + (p ? "&path=" + encodeURIComponent(p) : "")).catch(function () { return {nodes: []}; });
      })).then(function (answers) {
        var all = {};
        answers.forEach(function (a) { a.nodes.forEach(function (n) { all[n.node_path] = n; }); });
        var nodes = Object.keys(all).map(function (k) { return all[k]; }).filter(function (n) {
          var parent = n.node_path.split("/").slice(0, -1).join("/");
          return n.node_path === root || !root && n.depth === 1 || parent === root || expanded[parent];
        });
        nodes.sort(function (a, b) { return a.node_path.split("/") < b.node_path.split("/") ? -1 : 1; });
        var top = nodes.length ? Math.min.apply(null, nodes.map(function (n) { return n.depth; })) : 1;
        body.innerHTML = ""; rows = {};
        nodes.forEach(function (n) { body.appendChild(row(n, top)); });
        $("#tree-empty").hidden = nodes.length > 0;
        table.dataset.loaded = "1";
      });
    }
    var reload = debounce(fetchRows, 1500), source = null, levels = -1;
    function shownLevels() {  // levels below the root the table shows: 1, plus one per expanded generation
      var base = root ? root.split("/").length : 0, deepest = base + 1;
      Object.keys(expanded).forEach(function (p) { if (expanded[p]) deepest = Math.max(deepest, p.split("/").length + 1); });
      return deepest - base;
    }
    function listen() {
      var wanted = shownLevels();
      if (wanted === levels) return;
      levels = wanted;
      if (source) source.close();
      source = live(["aggregate"], root, {aggregate: onAggregate}, wanted);
    }
    function load() { fetchRows(); listen(); }
    load();
    function onAggregate(n) {
      var tr = rows[n.node_path];
      if (tr) {
        fill(tr, n); tr.classList.add("flash"); setTimeout(function () { tr.classList.remove("flash"); }, 900);
        $("#tree-updated").textContent = "updated " + time(n.window_end) + " UTC";
        table.dataset.updates = String(Number(table.dataset.updates || 0) + 1);
      } else { reload(); }
    }
  }

  // -- node ---------------------------------------------------------------------------------------
  function nodePage() {
    var path = $("#node-title").dataset.path, facts = $("#node-facts");
    var labels = [["battery_w", "battery kW", kilo], ["grid_w", "grid kW", kilo], ["load_w", "load kW", kilo], ["solar_w", "solar kW", kilo],
                  ["energy_available_wh", "energy available kWh", kilo], ["soc_pct", "SoC %", function (v) { return num(v, 1); }],
                  ["devices_known", "devices known", num], ["devices_reporting", "reporting", num], ["estimated_devices", "estimated", num],
                  ["window_end", "window end (UTC)", time]];
    function show(n) {
      facts.innerHTML = "";
      labels.forEach(function (l) {
        var div = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = l[1]; dd.textContent = l[2](n[l[0]]); dd.id = "fact-" + l[0];
        div.appendChild(dt); div.appendChild(dd); facts.appendChild(div);
      });
    }
    function chart() {
      var field = $("#series-field").value, span = Number($("#series-span").value);
      api("GET", "/api/nodes/" + path + "/series?field=" + field + "&from=" + (Date.now() - span)).then(function (s) {
        lineChart($("#node-chart"), [{label: field, color: "#1f6feb", points: s.points.map(function (p) { return [p.ts, p.value]; })}]);
      }).catch(function (e) { $("#node-chart").textContent = e.message; });
    }
    api("GET", "/api/nodes/" + path).then(show).catch(function (e) { facts.textContent = e.message; });
    chart();
    $("#series-field").onchange = chart; $("#series-span").onchange = chart;
    var again = debounce(chart, 1000);
    live(["aggregate"], path, {aggregate: function (n) { if (n.node_path === path) { show(n); again(); } }}, 0);
  }

  // -- dispatch --------------------------------------------------------------------------------------
  function dispatchPage() {
    var section = $("#command"), current = section.dataset.command || "", timer = null;
    var node = new URLSearchParams(location.search).get("node");
    if (node && $("#dispatch-node")) $("#dispatch-node").value = node;
    function recent() {
      api("GET", "/api/dispatch?limit=15").then(function (a) {
        var tb = $("#recent-commands tbody"); tb.innerHTML = "";
        a.commands.forEach(function (c) {
          var tr = document.createElement("tr"), td = document.createElement("td"), link = document.createElement("a");
          link.href = "/dispatch?command=" + c.command_id; link.textContent = c.command_id; td.appendChild(link); tr.appendChild(td);
          cell(tr, c.node_path); cell(tr, num(c.target_w)); cell(tr, c.issued_by); cell(tr, c.state || "waiting", "state-" + c.state); cell(tr, num(c.allocated_w));
          tb.appendChild(tr);
        });
      });
    }
    function watch() {
      if (!current) return;
      section.hidden = false; $("#command-id").textContent = current;
      api("GET", "/api/dispatch/" + encodeURIComponent(current)).then(function (d) {
        var c = d.command;
        $("#command-summary").textContent = c.node_path + ": target " + num(c.target_w) + " W, issued by " + c.issued_by +
          ", from " + time(c.start_at) + " to " + time(c.end_at) + " UTC; " + d.setpoint_rows + " set points stored";
        var tb = $("#command-statuses tbody"); tb.innerHTML = "";
        d.statuses.forEach(function (s) {
          var tr = document.createElement("tr");
          cell(tr, time(s.at)); cell(tr, s.state, "state-" + s.state); cell(tr, num(s.requested_w)); cell(tr, num(s.allocated_w, 1));
          cell(tr, num(s.shortfall_w, 1)); cell(tr, s.devices); cell(tr, s.reason || "");
          tb.appendChild(tr);
        });
        section.dataset.states = d.statuses.map(function (s) { return s.state; }).join(",");
        $("#command-measured").textContent = d.node ? num(d.node.battery_w) + " W at " + time(d.node.window_end) + " UTC" : "no node state";
        return api("GET", "/api/nodes/" + c.node_path + "/series?field=battery_w&from=" + (msOf(c.start_at) - 600000)).then(function (s) {
          var pts = s.points.map(function (p) { return [p.ts, p.value]; });
          var target = [[msOf(c.start_at), c.target_w], [Math.min(msOf(c.end_at), Date.now()), c.target_w]];
          lineChart($("#command-chart"), [{label: "measured battery W", color: "#1f6feb", points: pts}, {label: "target W", color: "#b42318", points: target}]);
        }).catch(function () {});
      }).catch(function (e) {
        $("#command-summary").textContent = e.status === 404 ? "sent; waiting for the dispatch flow to read it…" : e.message;
        section.dataset.states = "";
      });
    }
    var form = $("#dispatch-form");
    if (form) form.onsubmit = function (ev) {
      ev.preventDefault();
      var err = $("#dispatch-error"); err.hidden = true;
      api("POST", "/api/dispatch", {node_path: $("#dispatch-node").value, target_w: Number($("#dispatch-watts").value),
                                    minutes: Number($("#dispatch-minutes").value)}).then(function (r) {
        current = r.command_id; history.replaceState(null, "", "/dispatch?command=" + r.command_id); watch(); recent();
      }).catch(function (e) { err.textContent = e.message; err.hidden = false; });
    };
    recent(); watch();
    timer = setInterval(watch, 3000);
    live(["dispatch"], null, {dispatch: function (s) { recent(); if (s.command_id === current) watch(); }});
  }

  // -- alerts ------------------------------------------------------------------------------------------
  function alertsPage() {
    var operate = role === "operator" || role === "admin";
    function load() {
      var state = $("#alert-state").value;
      api("GET", "/api/alerts" + (state ? "?state=" + state : "")).then(function (a) {
        var tb = $("#alerts tbody"); tb.innerHTML = "";
        a.alerts.forEach(function (al) {
          var tr = document.createElement("tr"); tr.dataset.alert = al.alert_id;
          cell(tr, al.severity, "sev-" + al.severity); cell(tr, al.state, "state-" + al.state); cell(tr, al.rule); cell(tr, al.subject);
          cell(tr, al.summary); cell(tr, time(al.started_at));
          cell(tr, al.acked_by ? al.acked_by + " " + time(al.acked_at) : "", "acked");
          cell(tr, al.silenced_until ? new Date(al.silenced_until).toISOString().slice(0, 16).replace("T", " ") : "", "silenced");
          if (operate) {
            var td = document.createElement("td"), ack = document.createElement("button"), mute = document.createElement("button");
            ack.textContent = "Ack"; ack.className = "ack"; ack.disabled = !!al.acked_by;
            ack.onclick = function () { api("POST", "/api/alerts/" + encodeURIComponent(al.alert_id) + "/ack").then(load); };
            mute.textContent = "Silence 1 h"; mute.className = "silence";
            mute.onclick = function () { api("POST", "/api/alerts/" + encodeURIComponent(al.alert_id) + "/silence", {minutes: 60}).then(load); };
            td.appendChild(ack); td.appendChild(document.createTextNode(" ")); td.appendChild(mute); tr.appendChild(td);
          }
          tb.appendChild(tr);
        });
        $("#alerts-empty").hidden = a.alerts.length > 0;
      });
    }
    $("#alert-state").onchange = load;
    load();
    live(["alert"], null, {alert: debounce(load, 500)});
  }

  // -- market ------------------------------------------------------------------------------------------
  function marketPage() {
    function load() {
      api("GET", "/api/market").then(function (m) {
        var rows = m.intervals.slice().reverse();
        $("#market-status").textContent = m.market ? "market: " + JSON.stringify(m.market).slice(0, 200) : "market simulator not reachable";
        lineChart($("#price-chart"), [
          {label: "forecast", color: "#1f6feb", points: rows.map(function (r) { return [r.interval_start, r.forecast_price_usd_per_mwh]; })},
          {label: "actual", color: "#b42318", points: rows.map(function (r) { return [r.interval_start, r.actual_price_usd_per_mwh]; })}]);
        var power = [
          {label: "planned W", color: "#1f6feb", points: rows.map(function (r) { return [r.interval_start, r.planned_w]; })},
          {label: "awarded W", color: "#067647", points: rows.map(function (r) { return [r.interval_start, r.awarded_w]; })}];
        lineChart($("#power-chart"), power);
        if (rows.length) {  // the bidding node's measured battery power over the same intervals, when it reports
          api("GET", "/api/nodes/" + rows[0].node_path + "/series?field=battery_w&from=" + rows[0].interval_start).then(function (s) {
            if (!s.points.length) return;
            power.push({label: "measured W", color: "#b42318", points: s.points.map(function (p) { return [p.ts, p.value]; })});
            lineChart($("#power-chart"), power);
          }).catch(function () {});
        }
        var tb = $("#market tbody"); tb.innerHTML = "";
        m.intervals.forEach(function (r) {
          var tr = document.createElement("tr");
          cell(tr, new Date(r.interval_start).toISOString().slice(0, 16).replace("T", " ")); cell(tr, r.node_path); cell(tr, r.status);
          cell(tr, num(r.forecast_price_usd_per_mwh, 1)); cell(tr, num(r.actual_price_usd_per_mwh, 1)); cell(tr, num(r.planned_w));
          cell(tr, r.bid_pairs ? r.bid_pairs.map(function (p) { return num(p.quantity_w) + "@" + num(p.price_usd_per_mwh, 1); }).join(" ") : "");
          cell(tr, num(r.awarded_w)); cell(tr, num(r.clearing_price_usd_per_mwh, 1));
          tb.appendChild(tr);
        });
      });
    }
    load();
    live(["market"], null, {market: debounce(load, 1000)});
  }

  // -- audit (admins) ----------------------------------------------------------------------------------
  function auditPage() {
    api("GET", "/api/audit?limit=300").then(function (a) {
      var tb = $("#audit tbody"); tb.innerHTML = "";
      a.entries.forEach(function (e) {
        var tr = document.createElement("tr");
        cell(tr, e.at.slice(0, 19).replace("T", " ")); cell(tr, e.actor); cell(tr, e.action); cell(tr, e.target || "");
        cell(tr, e.address); cell(tr, e.outcome, e.outcome === "ok" ? "state-resolved" : "state-firing");
        tb.appendChild(tr);
      });
    });
  }

  var pages = {tree: treePage, node: nodePage, dispatch: dispatchPage, alerts: alertsPage, market: marketPage, audit: auditPage};
  if (pages[page]) pages[page]();
})();
