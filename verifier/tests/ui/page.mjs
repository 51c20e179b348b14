// Open the verifier's web page in Debian's Chromium (headless) with a client certificate, wait
// until it has rendered, report what it shows as one JSON line, and save a screenshot.
//   node page.mjs https://localhost:PORT client.pem client.key out.png
import { chromium } from "playwright-core";

const [url, certPath, keyPath, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node page.mjs URL CERT.pem KEY.pem OUT.png");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root in CI; no GPU; and no background traffic to the outside (the network is closed).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const ctx = await browser.newContext({
    // The server's certificate is from the verifier's own CA, which Chromium does not know.
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 860 },
    clientCertificates: [{ origin: new URL(url).origin, certPath, keyPath }],
  });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const resp = await page.goto(`${url}/ui`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20000 });
  const report = await page.evaluate(() => ({
    vms: [...document.querySelectorAll("#vms tbody tr[data-vm]")].map((r) => r.dataset.vm),
    tiers: [...document.querySelectorAll("#vms .tier")].map((t) => t.textContent),
    selected: document.querySelector("#vms tr.selected")?.dataset.vm ?? null,
    points: document.querySelectorAll("#chart circle").length,
    threshold: document.querySelectorAll("#chart line.threshold").length,
    regions: [...document.querySelectorAll("#pages svg")].map((s) => ({
      name: s.dataset.region,
      cells: s.querySelectorAll("rect").length,
      changed: [...s.querySelectorAll("rect")].flatMap((r, i) => r.classList.contains("changed") ? [i] : []),
    })),
    alerts: [...document.querySelectorAll("#alerts tbody tr[data-alert]")].map((r) => r.textContent),
    caption: document.getElementById("pages-caption").textContent,
    kernel: [...document.querySelectorAll("#kernel li")].map((l) => ({ kind: l.dataset.kind, severity: l.dataset.severity, text: l.textContent })),
    kernelCaption: document.getElementById("kernel-caption").textContent,
    status: document.getElementById("status").textContent,
  }));
  await page.screenshot({ path: out, fullPage: true });
  console.log(JSON.stringify({ http: resp.status(), csp: resp.headers()["content-security-policy"] ?? null, errors, ...report }));
} finally {
  await browser.close();
}
