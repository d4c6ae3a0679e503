/* A small line chart on a <canvas>: axes with ticks, series with points, a legend. */
"use strict";

(function () {
  const COLOURS = ["#2f6db5", "#e07b1a", "#2a9d4b", "#c0392b", "#8e44ad", "#7f8c8d"];

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const unit = raw / power;
    const nice = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10;
    return nice * power;
  }

  function ticks(low, high, count) {
    if (!(high > low)) {
      const pad = Math.abs(low) > 0 ? Math.abs(low) * 0.1 : 1;
      low -= pad;
      high += pad;
    }
    const step = niceStep(high - low, count);
    const start = Math.floor(low / step) * step;
    const end = Math.ceil(high / step) * step;
    const values = [];
    for (let v = start; v <= end + step / 2; v += step) values.push(Number(v.toPrecision(12)));
    return { low: start, high: end, values: values, step: step };
  }

  function label(value, step) {
    const digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
    return value.toFixed(digits);
  }

  /* Draw `options.series` ([{name, values}]) against `options.x` on `canvas`. */
  function lineChart(canvas, options) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 480;
    const height = canvas.clientHeight || 280;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = "12px system-ui, sans-serif";
    const x = options.x;
    const series = options.series.filter((s) => s.values.some((v) => v !== null && Number.isFinite(v)));
    const finite = [].concat(...series.map((s) => s.values.filter((v) => v !== null && Number.isFinite(v))));
    const margin = { left: 72, right: 16, top: 30, bottom: 42 };
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;
    g.fillStyle = "#1d2733";
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.font = "bold 13px system-ui, sans-serif";
    g.fillText(options.title || "", margin.left, 18);
    g.font = "12px system-ui, sans-serif";
    if (!finite.length || !x.length) {
      g.fillStyle = "#5d6b7a";
      g.fillText("no values yet", margin.left + 10, margin.top + plotH / 2);
      return;
    }
    const xs = ticks(Math.min(...x), Math.max(...x), Math.min(8, Math.max(1, x.length - 1)));
    if (x.length === 1) {
      xs.low = x[0] - 1;
      xs.high = x[0] + 1;
      xs.values = [x[0] - 1, x[0], x[0] + 1];
      xs.step = 1;
    }
    const ys = ticks(Math.min(...finite), Math.max(...finite), 5);
    const px = (v) => margin.left + ((v - xs.low) / (xs.high - xs.low)) * plotW;
    const py = (v) => margin.top + plotH - ((v - ys.low) / (ys.high - ys.low)) * plotH;

    /* grid and tick labels */
    g.strokeStyle = "#e3e8ee";
    g.lineWidth = 1;
    g.fillStyle = "#5d6b7a";
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const v of ys.values) {
      const y = Math.round(py(v)) + 0.5;
      g.beginPath();
      g.moveTo(margin.left, y);
      g.lineTo(margin.left + plotW, y);
      g.stroke();
      g.fillText(label(v, ys.step), margin.left - 6, y);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (const v of xs.values) {
      if (Math.abs(v - Math.round(v)) > 1e-9 && xs.step >= 1) continue;
      const xp = Math.round(px(v)) + 0.5;
      g.beginPath();
      g.moveTo(xp, margin.top);
      g.lineTo(xp, margin.top + plotH);
      g.stroke();
      g.fillText(label(v, xs.step), xp, margin.top + plotH + 5);
    }
    /* axes */
    g.strokeStyle = "#5d6b7a";
    g.beginPath();
    g.moveTo(margin.left + 0.5, margin.top);
    g.lineTo(margin.left + 0.5, margin.top + plotH + 0.5);
    g.lineTo(margin.left + plotW, margin.top + plotH + 0.5);
    g.stroke();
    g.fillStyle = "#1d2733";
    g.fillText(options.xLabel || "epoch", margin.left + plotW / 2, height - 16);
    g.save();
    g.translate(13, margin.top + plotH / 2);
    g.rotate(-Math.PI / 2);
    g.textBaseline = "middle";
    g.fillText(options.yLabel || "", 0, 0);
    g.restore();

    /* series */
    series.forEach((s, i) => {
      const colour = s.colour || COLOURS[i % COLOURS.length];
      g.strokeStyle = colour;
      g.fillStyle = colour;
      g.lineWidth = 2;
      g.beginPath();
      let drawing = false;
      s.values.forEach((v, k) => {
        if (v === null || !Number.isFinite(v)) {
          drawing = false;
          return;
        }
        if (drawing) g.lineTo(px(x[k]), py(v));
        else g.moveTo(px(x[k]), py(v));
        drawing = true;
      });
      g.stroke();
      s.values.forEach((v, k) => {
        if (v === null || !Number.isFinite(v)) return;
        g.beginPath();
        g.arc(px(x[k]), py(v), 3, 0, 2 * Math.PI);
        g.fill();
      });
    });

    /* legend (top right) */
    g.textAlign = "left";
    g.textBaseline = "middle";
    const widths = series.map((s) => g.measureText(s.name).width);
    const boxW = Math.max(...widths) + 34;
    const boxH = series.length * 18 + 8;
    const left = margin.left + plotW - boxW - 4;
    const top = margin.top + 4;
    g.fillStyle = "rgba(255, 255, 255, 0.9)";
    g.strokeStyle = "#d8dee6";
    g.fillRect(left, top, boxW, boxH);
    g.strokeRect(left + 0.5, top + 0.5, boxW, boxH);
    series.forEach((s, i) => {
      const colour = s.colour || COLOURS[i % COLOURS.length];
      const y = top + 13 + i * 18;
      g.strokeStyle = colour;
      g.lineWidth = 2;
      g.beginPath();
      g.moveTo(left + 6, y);
      g.lineTo(left + 24, y);
      g.stroke();
      g.fillStyle = "#1d2733";
      g.fillText(s.name, left + 29, y);
    });
  }

  window.dpChart = { lineChart: lineChart, colours: COLOURS };
})();
