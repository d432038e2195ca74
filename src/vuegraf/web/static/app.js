// vuegraf's graphs page: plain JavaScript over the JSON API, drawn with the vendored uPlot.
// No build step and no network beyond this server. The picked account, device and view live
// in the URL hash (#account/device/view) so a reload shows the same thing.
(function () {
  "use strict";

  // How often the table's live watts are read again (the store gets a new minute each minute;
  // a quarter of that shows it soon after it lands).
  var LIVE_POLL_MS = 15000;
  // How often the table's energy totals are read again.
  var TOTALS_POLL_MS = 60000;
  // How often the graphs are read again: a page left open keeps moving with the store.
  // `?refresh=S` in the address asks for every S seconds instead (5 at least), e.g. for a wall
  // display.
  var GRAPH_POLL_MS = 60000;
  // How soon the device list is asked for again while it is empty.
  var LAYOUT_RETRY_MS = 10000;
  // Live watts older than this (seconds) are shown with their age: collection has stalled.
  var STALE_SECS = 180;
  var askedRefresh = Number(new URLSearchParams(location.search).get("refresh"));
  if (askedRefresh >= 5) GRAPH_POLL_MS = askedRefresh * 1000;
  var CHART_HEIGHT = 160;
  var STACK_HEIGHT = 300;

  // What tests (and curious users) can read: the uPlot instances by channel name (and
  // "stack"), whether every chart of the current view has drawn and which pick (as its hash)
  // they show, the live watts by channel, the error shown.
  var state = (window.vuegraf = { charts: {}, ready: false, drawn: null, live: {}, error: null });

  var layout = null;
  var pick = null; // {account, device, view}
  var loadToken = 0; // a newer pick makes older answers stale
  var observer = null;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text != null) node.textContent = text;
    return node;
  }

  function showError(message) {
    var box = document.getElementById("error");
    state.error = message;
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    var box = document.getElementById("error");
    state.error = null;
    box.textContent = "";
    box.hidden = true;
  }

  // The API's answer as an object, or null after showing why not (never a thrown error).
  function getJson(path, params) {
    var query = Object.keys(params || {}).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
    var url = path + (query ? "?" + query : "");
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (resp) {
      return resp.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (e) { body = null; }
        if (!resp.ok) {
          var why = body && body.error ? body.error : resp.status + " " + resp.statusText;
          showError(url + ": " + why);
          return null;
        }
        if (body === null) {
          showError(url + ": the answer is not JSON");
          return null;
        }
        return body;
      });
    }).catch(function (err) {
      showError(url + ": " + (err && err.message ? err.message : "cannot reach vuegraf"));
      return null;
    });
  }

  function watts(v) {
    if (v == null) return "–";
    return Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " kW" : Math.round(v) + " W";
  }

  function kwh(v) {
    return v == null ? "–" : v.toFixed(v < 10 ? 2 : 1) + " kWh";
  }

  function color(i, alpha) {
    return "hsla(" + ((i * 47 + 200) % 360) + ", 65%, 50%, " + alpha + ")";
  }

  // -- the hash ----------------------------------------------------------------------------

  function readHash() {
    var parts = location.hash.replace(/^#/, "").split("/").map(function (p) {
      try { return decodeURIComponent(p); } catch (e) { return ""; }
    });
    return { account: parts[0] || "", device: parts[1] || "", view: parts[2] || "" };
  }

  function hashOf(p) {
    return "#" + [p.account, p.device, p.view].map(encodeURIComponent).join("/");
  }

  function findAccount(name) {
    return layout.accounts.filter(function (a) { return a.name === name; })[0] || null;
  }

  function findDevice(account, id) {
    return account.devices.filter(function (d) { return d.id === id; })[0] || null;
  }

  // The hash's pick where it names something in the layout, the first of each otherwise.
  function resolve(wanted) {
    var account = findAccount(wanted.account) || layout.accounts[0];
    if (!account || !account.devices.length) return null;
    var device = findDevice(account, wanted.device) || account.devices[0];
    var views = layout.views.map(function (v) { return v.name; });
    var view = views.indexOf(wanted.view) >= 0 ? wanted.view : views[0];
    return { account: account.name, device: device.id, view: view };
  }

  // -- the device list and the tabs --------------------------------------------------------

  function drawDeviceList() {
    var nav = document.getElementById("devices");
    nav.textContent = "";
    layout.accounts.forEach(function (account) {
      nav.appendChild(el("h2", {}, account.name));
      var ids = {};
      account.devices.forEach(function (d) { ids[d.id] = true; });
      var list = function (parent) {
        var ul = el("ul");
        account.devices.filter(function (d) {
          return parent === null ? !(d.parent && ids[d.parent]) : d.parent === parent;
        }).forEach(function (d) {
          var li = el("li");
          var link = el("a", { "data-account": account.name, "data-device": d.id }, d.name);
          link.href = hashOf({ account: account.name, device: d.id, view: pick ? pick.view : "" });
          li.appendChild(link);
          var children = list(d.id);
          if (children.childNodes.length) li.appendChild(children);
          ul.appendChild(li);
        });
        return ul;
      };
      nav.appendChild(list(null));
    });
  }

  function markPicked() {
    Array.prototype.forEach.call(document.querySelectorAll("#devices a"), function (a) {
      var on = a.dataset.account === pick.account && a.dataset.device === pick.device;
      a.className = on ? "picked" : "";
      a.href = hashOf({ account: a.dataset.account, device: a.dataset.device, view: pick.view });
    });
    var tabs = document.getElementById("tabs");
    tabs.textContent = "";
    layout.views.forEach(function (v) {
      var b = el("button", { type: "button", role: "tab", "data-view": v.name }, v.name);
      b.className = v.name === pick.view ? "picked" : "";
      b.addEventListener("click", function () {
        location.hash = hashOf({ account: pick.account, device: pick.device, view: v.name });
      });
      tabs.appendChild(b);
    });
  }

  // -- charts ------------------------------------------------------------------------------

  function destroyCharts() {
    Object.keys(state.charts).forEach(function (k) { state.charts[k].destroy(); });
    state.charts = {};
    state.ready = false;
    state.drawn = null;
    document.getElementById("stack").textContent = "";
    document.getElementById("charts").textContent = "";
  }

  function axes() {
    return [
      {},
      { size: 64, values: function (u, vals) { return vals.map(watts); } },
    ];
  }

  function baseOptions(width, height) {
    var tz = layout.timezone;
    return {
      width: width,
      height: height,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), tz); },
      scales: { x: { time: true } },
      axes: axes(),
    };
  }

  // The channel's mean line, and its min/max band where some bucket holds more than a point.
  function channelChart(series, times, width, onDrawn) {
    var spread = series.min.some(function (lo, i) {
      return lo != null && series.max[i] != null && lo !== series.max[i];
    });
    var opts = baseOptions(width, CHART_HEIGHT);
    opts.series = [
      {},
      { label: "mean", stroke: "#246", width: 1.5, spanGaps: false, value: function (u, v) { return watts(v); } },
      { label: "min", stroke: "transparent", width: 0, spanGaps: false, points: { show: false },
        value: function (u, v) { return watts(v); } },
      { label: "max", stroke: "transparent", width: 0, spanGaps: false, points: { show: false },
        fill: spread ? "rgba(34, 68, 102, 0.18)" : undefined, value: function (u, v) { return watts(v); } },
    ];
    opts.bands = spread ? [{ series: [3, 2], fill: "rgba(34, 68, 102, 0.18)" }] : [];
    opts.hooks = { draw: [onDrawn] };
    return { opts: opts, data: [times, series.mean, series.min, series.max] };
  }

  // The panel's circuits and Balance stacked (each layer a running sum of the means below it;
  // a bucket a layer has no value for is a gap in that layer), the mains as a line on top.
  function stackChart(graph, width, onDrawn) {
    var layers = graph.series.filter(function (s) {
      return s.kind === "circuit" || s.num === "Balance"
        || (s.kind === "computed" && /-Balance$/.test(s.name));
    });
    var mains = graph.series.filter(function (s) { return s.kind === "mains"; })[0];
    if (!layers.length || !mains) return null;
    var sums = graph.times.map(function () { return 0; });
    var data = [graph.times];
    var opts = baseOptions(width, STACK_HEIGHT);
    // The bottom layer fills down to zero: the axis starts there too.
    opts.scales.y = { range: function (u, min, max) { return [Math.min(0, min), max]; } };
    opts.series = [{}];
    opts.bands = [];
    layers.forEach(function (s, k) {
      data.push(s.mean.map(function (v, i) {
        if (v == null) return null;
        sums[i] += v;
        return sums[i];
      }));
      opts.series.push({
        label: s.name,
        stroke: color(k, 1),
        fill: color(k, 0.45),
        width: 1,
        spanGaps: false,
        points: { show: false },
        value: function (u, v, si, i) { return i == null ? "–" : watts(s.mean[i]); },
      });
      if (k > 0) opts.bands.push({ series: [k + 1, k], fill: color(k, 0.45) });
    });
    data.push(mains.mean);
    opts.series.push({ label: mains.name, stroke: "#000", width: 2, spanGaps: false,
      value: function (u, v) { return watts(v); } });
    opts.legend = { show: width >= 600 };
    opts.hooks = { draw: [onDrawn] };
    return { opts: opts, data: data };
  }

  function drawGraph(graph, shown) {
    destroyCharts();
    var drawn = {};
    var expected = [];
    var finish = function () {
      state.ready = expected.every(function (k) { return drawn[k]; });
      if (state.ready) state.drawn = shown;
    };
    var done = function (key) {
      return function () {
        drawn[key] = true;
        finish();
      };
    };
    var made = [];
    var stackBox = document.getElementById("stack");
    var width = stackBox.clientWidth || document.getElementById("view").clientWidth;
    var stack = stackChart(graph, width, done("stack"));
    stackBox.hidden = stack === null;
    if (stack) {
      stackBox.appendChild(el("h3", {}, graph.deviceName + ": circuits stacked against the mains"));
      made.push(["stack", stack, stackBox]);
    }
    var list = document.getElementById("charts");
    graph.series.forEach(function (s) {
      var box = el("div", { class: "chart", "data-channel": s.name });
      box.appendChild(el("h3", {}, s.name));
      list.appendChild(box);
      made.push([s.name, channelChart(s, graph.times, box.clientWidth || width, done(s.name)), box]);
    });
    expected = made.map(function (m) { return m[0]; });
    made.forEach(function (m) {
      state.charts[m[0]] = new uPlot(m[1].opts, m[1].data, m[2]);
    });
    if (!made.length) finish();
  }

  // Charts follow the width of their box (a phone turned, a window resized).
  function watchWidth() {
    if (observer || typeof ResizeObserver === "undefined") return;
    observer = new ResizeObserver(function () {
      Object.keys(state.charts).forEach(function (k) {
        var u = state.charts[k];
        var box = u.root.parentNode;
        if (box && box.clientWidth && Math.abs(box.clientWidth - u.width) > 1) {
          u.setSize({ width: box.clientWidth, height: u.height });
        }
      });
    });
    observer.observe(document.getElementById("view"));
  }

  // -- the table ---------------------------------------------------------------------------

  function drawTable(device) {
    var body = document.querySelector("#channels tbody");
    body.textContent = "";
    device.channels.forEach(function (c) {
      var tr = el("tr", { "data-channel": c.name });
      tr.appendChild(el("td", {}, c.name));
      ["live", "today", "month", "year"].forEach(function (col) {
        tr.appendChild(el("td", { "data-col": col }, "–"));
      });
      body.appendChild(tr);
    });
  }

  function cell(channel, col) {
    var rows = document.querySelectorAll("#channels tbody tr");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.channel === channel) return rows[i].querySelector('[data-col="' + col + '"]');
    }
    return null;
  }

  function readLive(token) {
    var p = pick;
    return getJson("/api/now", { account: p.account }).then(function (answer) {
      if (!answer || token !== loadToken) return;
      var live = {};
      (answer.accounts || []).forEach(function (a) {
        if (a.name !== p.account) return;
        a.channels.forEach(function (c) {
          if (c.device !== p.device) return;
          live[c.name] = { watts: c.watts, time: c.time };
          var td = cell(c.name, "live");
          if (!td) return;
          // A minute older than a few cycles is not "now": it says how old it is, greyed.
          var age = c.time == null ? 0 : answer.now - c.time;
          var stale = c.watts != null && age > STALE_SECS;
          td.textContent = watts(c.watts) + (stale ? " (" + Math.round(age / 60) + " min ago)" : "");
          td.classList.toggle("stale", stale);
        });
      });
      state.live = live;
    });
  }

  function readTotals(token) {
    var p = pick;
    return getJson("/api/totals", { account: p.account, device: p.device }).then(function (answer) {
      if (!answer || token !== loadToken) return;
      answer.channels.forEach(function (c) {
        ["today", "month", "year"].forEach(function (col) {
          var td = cell(c.name, col);
          if (td) td.textContent = kwh(c[col]);
        });
      });
    });
  }

  // -- loading a pick ----------------------------------------------------------------------

  function load() {
    var next = resolve(readHash());
    if (!next) {
      showError("no device in the layout yet: vuegraf has not stored anything");
      return;
    }
    if (hashOf(next) !== location.hash) {
      history.replaceState(null, "", hashOf(next));
    }
    pick = next;
    var token = ++loadToken;
    clearError();
    markPicked();
    var device = findDevice(findAccount(pick.account), pick.device);
    document.getElementById("picked").textContent = pick.account + " · " + device.name + " · " + pick.view;
    destroyCharts();
    drawTable(device);
    readLive(token);
    readTotals(token);
    getJson("/api/graph", { account: pick.account, device: pick.device, view: pick.view })
      .then(function (graph) {
        if (!graph || token !== loadToken) return;
        try {
          drawGraph(graph, hashOf(pick));
        } catch (err) {
          showError("cannot draw the graph: " + err.message);
        }
      });
  }

  // The same pick read again: new numbers go into the charts drawn (no flicker, the scroll and
  // any zoom stay); a different set of channels is drawn afresh.
  function refreshGraph(token) {
    var p = pick;
    var shown = hashOf(p);
    return getJson("/api/graph", { account: p.account, device: p.device, view: p.view })
      .then(function (graph) {
        if (!graph || token !== loadToken || state.drawn !== shown) return;
        var names = graph.series.map(function (s) { return s.name; });
        var same = names.every(function (n) { return state.charts[n]; })
          && Object.keys(state.charts).length === names.length + (state.charts.stack ? 1 : 0);
        var stack = state.charts.stack ? stackChart(graph, state.charts.stack.width, function () {}) : null;
        if (!same || (state.charts.stack && !stack)) {
          drawGraph(graph, shown);
          return;
        }
        graph.series.forEach(function (s) {
          state.charts[s.name].setData([graph.times, s.mean, s.min, s.max]);
        });
        if (stack) {
          // Its legend reads the layers' own values: a new chart, in the old one's place.
          var old = state.charts.stack;
          var box = old.root.parentNode;
          old.destroy();
          state.charts.stack = new uPlot(stack.opts, stack.data, box);
        }
        state.refreshed = (state.refreshed || 0) + 1;
        clearError();
      });
  }

  function start() {
    getJson("/api/layout").then(function (answer) {
      if (!answer) return;
      layout = answer;
      if (!layout.accounts || !layout.views || !layout.views.length) {
        showError("/api/layout: no accounts or views");
        return;
      }
      pick = resolve(readHash());
      if (!pick) {
        // vuegraf has not read the device list yet (Emporia away at start): ask again soon.
        showError("no device known yet: vuegraf has not read the device list; retrying");
        setTimeout(start, LAYOUT_RETRY_MS);
        return;
      }
      clearError();
      drawDeviceList();
      watchWidth();
      window.addEventListener("hashchange", load);
      load();
      setInterval(function () { if (pick) readLive(loadToken); }, LIVE_POLL_MS);
      setInterval(function () { if (pick) readTotals(loadToken); }, TOTALS_POLL_MS);
      setInterval(function () { if (pick) refreshGraph(loadToken); }, GRAPH_POLL_MS);
    });
  }

  start();
})();
