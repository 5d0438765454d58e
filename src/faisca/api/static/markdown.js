// A small, safe Markdown renderer for model output: it builds DOM nodes and sets text with textContent or text
// nodes only, never innerHTML, so nothing a model writes can become markup. Links are kept only for http(s) URLs.
// Covers what chat answers use: code fences, inline code, headings, bold/italic/strikethrough, lists, quotes,
// tables, rules, paragraphs. An unclosed fence (a streaming answer) shows as code so far.
"use strict";

window.FaiscaMarkdown = (() => {
  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^ {0,3}>\s?/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
  const INLINE = new RegExp([
    "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)",           // 1,2: code span
    "\\[([^\\]\\n]+)\\]\\(\\s*(\\S+?)\\s*\\)",          // 3,4: [text](url)
    "(https?://[^\\s<>()]*[^\\s<>().,;:!?'\"*_])",     // 5: bare URL
    "\\*\\*(\\S(?:[\\s\\S]*?\\S)?)\\*\\*",              // 6: **bold**
    "__(\\S(?:[\\s\\S]*?\\S)?)__",                      // 7: __bold__
    "~~(\\S(?:[\\s\\S]*?\\S)?)~~",                      // 8: ~~strike~~
    "\\*([^\\s*](?:[\\s\\S]*?[^\\s*])?)\\*",            // 9: *italic*
    "(?<![\\w])_([^\\s_](?:[\\s\\S]*?[^\\s_])?)_(?![\\w])", // 10: _italic_
  ].join("|"), "g");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function safeUrl(raw) {
    try {
      const url = new URL(raw);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function link(text, raw) {
    const href = safeUrl(raw);
    if (!href) return document.createTextNode(text === raw ? raw : `${text} (${raw})`);
    const a = el("a");
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    inline(text, a);
    return a;
  }

  function inline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      if (m[1] !== undefined) parent.append(el("code", "", m[2].replace(/^ (.+) $/, "$1")));
      else if (m[3] !== undefined) parent.append(link(m[3], m[4]));
      else if (m[5] !== undefined) parent.append(link(m[5], m[5]));
      else {
        const [tag, inner] = m[6] ?? m[7] ? ["strong", m[6] ?? m[7]] : m[8] ? ["del", m[8]] : ["em", m[9] ?? m[10]];
        const node = el(tag);
        inline(inner, node);
        parent.append(node);
      }
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
    return parent;
  }

  function lines(parent, textLines) { // a paragraph's lines, with their line breaks kept
    textLines.forEach((line, i) => {
      if (i) parent.append(el("br"));
      inline(line.trim(), parent);
    });
    return parent;
  }

  function codeBlock(lang, code) {
    const wrap = el("div", "code-block");
    const head = el("div", "code-head");
    head.append(el("span", "code-lang", lang || "text"));
    if (navigator.clipboard) {
      const copy = el("button", "copy", "Copy");
      copy.type = "button";
      copy.addEventListener("click", () => navigator.clipboard.writeText(code).then(() => {
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = "Copy"; }, 1200);
      }));
      head.append(copy);
    }
    const pre = el("pre");
    pre.append(el("code", lang ? `language-${lang}` : "", code));
    wrap.append(head, pre);
    return wrap;
  }

  function cells(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((cell) => cell.trim());
  }

  function table(header, rows) {
    const wrap = el("div", "table-wrap");
    const t = el("table");
    const head = el("tr");
    cells(header).forEach((cell) => head.append(inline(cell, el("th"))));
    t.append(el("thead"));
    t.tHead.append(head);
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr");
      cells(row).forEach((cell) => tr.append(inline(cell, el("td"))));
      body.append(tr);
    }
    t.append(body);
    wrap.append(t);
    return wrap;
  }

  function isBlockStart(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  function list(all, start) { // consecutive items at the first item's indent; deeper lines belong to an item
    const first = all[start].match(ITEM);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    let i = start;
    let item = null;
    const flush = () => {
      if (!item) return;
      const li = el("li");
      const body = blocks(item);
      const only = body.childNodes.length === 1 && body.firstChild.tagName === "P";
      li.append(...(only ? body.firstChild.childNodes : body.childNodes)); // a tight item: no paragraph
      node.append(li);
    };
    while (i < all.length) {
      const line = all[i];
      const m = line.match(ITEM);
      if (m && m[1].length === indent && /\d/.test(m[2]) === ordered) {
        flush();
        item = [m[3]];
      } else if (line.trim() === "") {
        const next = all[i + 1];
        if (next === undefined || (!/^\s/.test(next) && !ITEM.test(next))) break;
        item.push("");
      } else if (/^\s/.test(line) && line.search(/\S/) > indent) {
        item.push(line.slice(Math.min(line.search(/\S/), indent + 4)));
      } else if (m && m[1].length < indent) {
        break;
      } else if (!isBlockStart(line) && item) {
        item.push(line.trim()); // a lazy continuation of the item's paragraph
      } else break;
      i++;
    }
    flush();
    return [node, i];
  }

  function blocks(all) {
    const out = document.createDocumentFragment();
    let i = 0;
    while (i < all.length) {
      const line = all[i];
      let m;
      if (line.trim() === "") {
        i++;
      } else if ((m = line.match(FENCE))) {
        const fence = m[1];
        const code = [];
        i++;
        while (i < all.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(all[i])) code.push(all[i++]);
        i++; // the closing fence, when there is one
        out.append(codeBlock(m[2], code.join("\n")));
      } else if ((m = line.match(HEADING))) {
        out.append(inline(m[2], el(`h${Math.min(m[1].length + 2, 6)}`)));
        i++;
      } else if (RULE.test(line)) {
        out.append(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < all.length && QUOTE.test(all[i])) quoted.push(all[i++].replace(QUOTE, ""));
        const quote = el("blockquote");
        quote.append(blocks(quoted));
        out.append(quote);
      } else if (ITEM.test(line)) {
        const [node, next] = list(all, i);
        out.append(node);
        i = next;
      } else if (line.includes("|") && i + 1 < all.length && TABLE_RULE.test(all[i + 1]) && all[i + 1].includes("-")) {
        const rows = [];
        i += 2;
        while (i < all.length && all[i].includes("|") && all[i].trim() !== "") rows.push(all[i++]);
        out.append(table(line, rows));
      } else {
        const paragraph = [];
        while (i < all.length && all[i].trim() !== "" && (paragraph.length === 0 || !isBlockStart(all[i]))) {
          paragraph.push(all[i++]);
        }
        out.append(lines(el("p"), paragraph));
      }
    }
    return out;
  }

  /** The Markdown `text` as a DocumentFragment of safe nodes. */
  function render(text) {
    return blocks(String(text).replace(/\r\n?/g, "\n").split("\n"));
  }

  return { render, safeUrl };
})();
