/* A small SVG line chart: lineChart(element, [{label, color, points: [[ms, value], ...]}], {unit}) */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(v, span) {
    var a = Math.abs(v);
    if (span >= 100 && a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (span >= 100 && a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    var digits = span >= 10 ? 0 : span >= 1 ? 1 : span >= 0.1 ? 2 : 3;
    return v.toFixed(digits);
  }
  function clock(ms, span) { return new Date(ms).toISOString().slice(11, span < 600000 ? 19 : 16); }
  window.lineChart = function (target, series, opts) {
    opts = opts || {};
    var W = 800, H = 260, L = 56, R = 12, T = 12, B = 28;
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] !== null) { xs.push(p[0]); ys.push(p[1]); } }); });
    target.innerHTML = "";
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img",
                         "aria-label": opts.label || "chart"});
    target.appendChild(svg);
    if (!xs.length) { svg.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#667085"}, "no data yet")); return svg; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x1 = x0 + 1; } if (y1 === y0) { y1 += 1; y0 -= 1; }
    var pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
    function X(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
    function Y(v) { return T + (1 - (v - y0) / (y1 - y0)) * (H - T - B); }
    for (var i = 0; i <= 4; i++) {
      var v = y0 + (y1 - y0) * i / 4, y = Y(v);
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#eaecf0"}));
      svg.appendChild(el("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#667085"}, fmt(v, (y1 - y0) / 4)));
    }
    for (var j = 0; j <= 4; j++) {
      var t = x0 + (x1 - x0) * j / 4;
      svg.appendChild(el("text", {x: X(t), y: H - 8, "text-anchor": "middle", "font-size": 11, fill: "#667085"}, clock(t, x1 - x0)));
    }
    if (y0 < 0 && y1 > 0) svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(0), y2: Y(0), stroke: "#98a2b3"}));
    series.forEach(function (s, k) {
      var d = "", pen = false;
      s.points.forEach(function (p) {
        if (p[1] === null) { pen = false; return; }
        d += (pen ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1); pen = true;
      });
      svg.appendChild(el("path", {d: d, fill: "none", stroke: s.color || "#1f6feb", "stroke-width": 2,
                                  "vector-effect": "non-scaling-stroke", "data-series": s.label}));
      svg.appendChild(el("text", {x: L + 8 + k * 150, y: T + 12, "font-size": 12, fill: s.color || "#1f6feb"}, s.label));
    });
    return svg;
  };
})();
