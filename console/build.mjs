// Builds the console into src/sessionpool/faces/console/static (the server serves it at
// /console): one script bundle (CodeMirror included; nothing is fetched from elsewhere at run
// time), the stylesheet and the page. Run by `make console` (and so by `make serve`) after
// `npm ci --ignore-scripts`.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.CONSOLE_OUT || join(here, "..", "src", "sessionpool", "faces", "console", "static");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  outfile: join(out, "console.js"),
  logLevel: "warning",
});
for (const name of ["index.html", "console.css"]) {
  copyFileSync(join(here, name), join(out, name));
}
console.log(`console built into ${out}`);
