// Render the maths that pymdownx.arithmatex (generic mode) leaves as \( … \) and \[ … \], with the KaTeX
// copy shipped under assets/katex (no network needed), on every page load and instant navigation.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
