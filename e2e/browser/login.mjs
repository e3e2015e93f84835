// Drives a real headless Chromium (Debian `chromium`, through npm
// `playwright-core`) through browser sign-in at Portcullis for test_10.
//
//   node browser/login.mjs '<plan JSON>'
//
// The plan: {"base": PORTCULLIS_URL, "idp": ISSUER, "steps": [...]}; each step
// is run in order in one browser context (one cookie jar) and its observation
// is printed, all of them as one JSON array on stdout:
//   {"do": "goto", "path": P}                  status, url, text of the page
//   {"do": "signin", "path": P, "user": U}     goto, then the provider's dev
//                                              login and consent; lands back
//   {"do": "fetch", "path": P, "api": bool}    fetch() from the page (api: with
//                                              X-Requested-With); status, text
//   {"do": "parallel", "path": P, "n": N}      N fetches at once; statuses
//   {"do": "cookies"}                          the context's cookies
//   {"do": "logout"}                           the 403 page's or whoami's CSRF
//                                              token POSTed to /.portcullis/logout
//   {"do": "idp_logout"}                       sign out at the provider itself
//   {"do": "post", "path": P}                  a form on Portcullis's own origin
//                                              POSTs to P; status, url, text
//   {"do": "forge", "from": ORIGIN, "path": P} the same form, auto-submitted by
//                                              a page of another ORIGIN (served by
//                                              the browser's request interception)
//   {"do": "sleep", "ms": MS}
import { chromium } from 'playwright-core';

const plan = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = [];
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const url = (p) => new URL(p, plan.base).toString();
  const seen = async (response) => ({
    status: response ? response.status() : null,
    url: page.url(),
    text: await page.content(),
  });
  for (const step of plan.steps) {
    switch (step.do) {
      case 'goto':
        out.push(await seen(await page.goto(url(step.path))));
        break;
      case 'signin': {
        await page.goto(url(step.path));
        // oidc-provider's development interactions: a login form, then consent.
        await page.waitForSelector('input[name=login]', { timeout: 20000 });
        await page.fill('input[name=login]', step.user);
        await page.fill('input[name=password]', 'any');
        await page.click('button[type=submit]');
        const back = page.waitForURL((u) => u.toString().startsWith(plan.base), { timeout: 20000 });
        const consent = page.waitForSelector('button[type=submit]', { timeout: 20000 })
          .then((b) => b.click()).catch(() => {});
        await Promise.race([back, consent.then(() => back)]);
        await page.waitForLoadState('load');
        out.push({ status: null, url: page.url(), text: await page.content() });
        break;
      }
      case 'fetch':
        // fetch() runs same-origin: come back to Portcullis's origin first.
        if (!page.url().startsWith(plan.base)) await page.goto(url('/.well-known/portcullis/jwks.json'));
        out.push(await page.evaluate(async ({ target, api }) => {
          const r = await fetch(target, { headers: api ? { 'X-Requested-With': 'fetch', Accept: 'application/json' } : {} , redirect: 'manual' });
          return { status: r.status, text: await r.text() };
        }, { target: url(step.path), api: Boolean(step.api) }));
        break;
      case 'parallel':
        if (!page.url().startsWith(plan.base)) await page.goto(url('/.well-known/portcullis/jwks.json'));
        out.push(await page.evaluate(async ({ target, n }) => {
          const all = await Promise.all([...Array(n)].map(() => fetch(target, { headers: { 'X-Requested-With': 'fetch' } })));
          return all.map((r) => r.status);
        }, { target: url(step.path), n: step.n }));
        break;
      case 'cookies':
        out.push(await context.cookies());
        break;
      case 'logout': {
        const who = await page.evaluate(async (target) => (await fetch(target)).json(), url('/.portcullis/whoami'));
        const csrf = who.session?.csrf_token ?? '';
        // A real form post, as the sign-out button of the 403 page sends it.
        await page.setContent(`<form method="post" action="${url('/.portcullis/logout')}"><input name="csrf" value="${csrf}"></form>`);
        const done = page.waitForNavigation({ timeout: 20000 });
        await page.evaluate(() => document.forms[0].submit());
        await done;
        out.push({ status: null, url: page.url(), text: await page.content() });
        break;
      }
      case 'idp_logout': {
        await page.goto(new URL('/session/end', plan.idp).toString());
        await page.click('button[value=yes], button[name=logout]');
        await page.waitForLoadState('load');
        out.push({ status: null, url: page.url(), text: await page.content() });
        break;
      }
      case 'post':
      case 'forge': {
        const form = `<form method="post" action="${url(step.path)}"><input name="amount" value="1000"></form>`;
        if (step.do === 'forge') {
          const attack = new URL('/attack', step.from).toString();
          await context.route(attack, (route) => route.fulfill({ contentType: 'text/html', body: `<html><body>${form}</body></html>` }));
          await page.goto(attack);
        } else {
          await page.goto(url('/.well-known/portcullis/jwks.json'));
          await page.setContent(form);
        }
        const done = page.waitForNavigation({ timeout: 20000 });
        await page.evaluate(() => document.forms[0].submit());
        const response = await done;
        out.push(await seen(response));
        break;
      }
      case 'sleep':
        await new Promise((r) => setTimeout(r, step.ms));
        out.push(null);
        break;
      default:
        throw new Error(`unknown step ${step.do}`);
    }
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
