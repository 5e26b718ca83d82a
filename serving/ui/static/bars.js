// The explorer's score bars: a diverging stacked bar per item, zero at the centre.
//
// An item's score is the sum of its four explained parts plus the item's bias, and any of them can
// be negative: positive parts stack rightwards from zero, negative ones leftwards, and the bias is a
// segment of its own (score minus the parts), so the segments always add up to the stated score. One
// scale for every bar of an answer, so bars compare across rows: the widest negative stack of any
// item takes the left of the zero line and the widest positive stack the right (zero sits where
// they meet, at the centre only when they are equal), so no width is spent on a side no item uses.
"use strict";

(function () {
  const PARTS = [
    { key: "collaborative", label: "collaborative" },
    { key: "text", label: "text" },
    { key: "scene", label: "scene" },
    { key: "item_item", label: "item-item" },
  ];
  const BIAS = { key: "bias", label: "item bias" };

  /** The segments of one answered item: each part present in it, then the bias (score - parts). */
  function segments(item) {
    const parts = item.parts || {};
    const found = [];
    let sum = 0;
    for (const part of PARTS) {
      const value = parts[part.key];
      if (typeof value === "number" && Number.isFinite(value)) {
        found.push({ key: part.key, label: part.label, value });
        sum += value;
      }
    }
    if (!found.length) {
      return [{ key: "score", label: "score", value: item.score }];  // an answer without parts
    }
    found.push({ key: BIAS.key, label: BIAS.label, value: item.score - sum });
    return found;
  }

  /** The bars' common scale: the widest positive and the widest negative stack of any item. */
  function scaleOf(items) {
    let pos = 0;
    let neg = 0;
    for (const item of items) {
      let up = 0;
      let down = 0;
      for (const s of segments(item)) {
        if (s.value > 0) up += s.value; else down -= s.value;
      }
      pos = Math.max(pos, up);
      neg = Math.max(neg, down);
    }
    return pos + neg > 0 ? { pos, neg } : { pos: 1, neg: 0 };
  }

  function signed(value) {
    return (value >= 0 ? "+" : "−") + Math.abs(value).toFixed(3);
  }

  /** One item's bar on the answer's `scale`, or (compact) a thinner one; its breakdown is in its
   *  title and aria-label. Positions are percentages of the bar's width. */
  function bar(item, scale, compact) {
    const span = scale.pos + scale.neg;
    const zeroAt = (scale.neg / span) * 100;
    const root = document.createElement("div");
    root.className = compact ? "bar compact" : "bar";
    root.dataset.pos = String(scale.pos);
    root.dataset.neg = String(scale.neg);
    const zero = document.createElement("span");
    zero.className = "zero";
    zero.style.left = `${zeroAt}%`;
    root.append(zero);
    let up = 0;
    let down = 0;
    const words = [];
    for (const s of segments(item)) {
      const width = (Math.abs(s.value) / span) * 100;
      const start = s.value >= 0 ? zeroAt + (up / span) * 100 : zeroAt - ((down - s.value) / span) * 100;
      if (s.value >= 0) up += s.value; else down -= s.value;
      const seg = document.createElement("span");
      seg.className = `seg seg-${s.key}`;
      seg.dataset.part = s.key;
      seg.dataset.value = String(s.value);
      seg.style.left = `${start}%`;
      seg.style.width = `${width}%`;
      seg.title = `${s.label} ${signed(s.value)}`;
      root.append(seg);
      words.push(`${s.label} ${signed(s.value)}`);
    }
    const total = document.createElement("span");
    total.className = "total";
    total.dataset.value = String(item.score);
    const clamped = Math.max(-scale.neg, Math.min(scale.pos, item.score));
    total.style.left = `${zeroAt + (clamped / span) * 100}%`;
    total.title = `score ${item.score.toFixed(3)}`;
    root.append(total);
    const summary = `score ${item.score.toFixed(3)} = ${words.join(", ")}`;
    root.title = summary;
    root.setAttribute("role", "img");
    root.setAttribute("aria-label", summary);
    return root;
  }

  /** The legend: one swatch per segment kind, and the total's marker. */
  function legend() {
    const root = document.createDocumentFragment();
    for (const part of [...PARTS, BIAS]) {
      const key = document.createElement("span");
      key.className = "key";
      const swatch = document.createElement("span");
      swatch.className = `swatch seg-${part.key}`;
      key.append(swatch, part.label);
      root.append(key);
    }
    const total = document.createElement("span");
    total.className = "key";
    const marker = document.createElement("span");
    marker.className = "swatch total-swatch";
    total.append(marker, "score (their sum)");
    root.append(total, Object.assign(document.createElement("span"), {
      className: "key", textContent: "· left of the thin line: negative",
    }));
    return root;
  }

  window.scenerecBars = { bar, legend, scaleOf, segments };
})();
