// The dashboard's entry point: hash routing between pages, and the login that keeps
// the API key for this tab. Each page module exports `mount(view, params)` and returns
// a function that stops whatever it started (timers, sockets, streams).

import { get, getKey, setKey, onUnauthorized, ApiError } from './api.js';
import { notice, detail } from './dom.js';
import * as sandboxes from './sandboxes.js';
import * as sandbox from './sandbox.js';
import * as jobs from './jobs.js';
import * as snapshots from './snapshots.js';
import * as health from './health.js';

const routes = [
  [/^#\/sandboxes$/, sandboxes, 'sandboxes'],
  [/^#\/sandboxes\/([^/]+)$/, sandbox, 'sandboxes'],
  [/^#\/jobs$/, jobs, 'jobs'],
  [/^#\/jobs\/([^/]+)$/, jobs, 'jobs'],
  [/^#\/snapshots$/, snapshots, 'snapshots'],
  [/^#\/health$/, health, 'health'],
];

const view = document.getElementById('view');
const login = document.getElementById('login');
const loginForm = document.getElementById('login-form');
const loginKey = document.getElementById('login-key');
const loginError = document.getElementById('login-error');
const signout = document.getElementById('signout');

let stop = null;
let locked = false;

function unmount() {
  if (stop) {
    try {
      stop();
    } catch {
      // A page that fails to clean up must not keep the next one from showing.
    }
  }
  stop = null;
  view.replaceChildren();
}

function showLogin(message) {
  locked = true;
  document.body.classList.add('locked');
  unmount();
  login.hidden = false;
  view.hidden = true;
  loginError.textContent = message || '';
  signout.hidden = !getKey();
  loginKey.focus();
}

function route() {
  if (locked) return;
  const hash = location.hash || '#/sandboxes';
  const found = routes.find(([pattern]) => pattern.test(hash));
  if (!found) {
    location.replace('#/sandboxes');
    return;
  }
  const [pattern, page, section] = found;
  const params = hash.match(pattern).slice(1).map(decodeURIComponent);
  unmount();
  for (const link of document.querySelectorAll('nav a[data-page]')) {
    if (link.dataset.page === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  stop = page.mount(view, params) || null;
}

// Checks the key (or its absence) against the server before showing any page.
async function start() {
  try {
    await get('/info');
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // login shown
    notice(detail(error));
  }
  locked = false;
  document.body.classList.remove('locked');
  login.hidden = true;
  view.hidden = false;
  signout.hidden = !getKey();
  route();
}

onUnauthorized((error) => showLogin(error.detail));

loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  setKey(loginKey.value.trim());
  loginKey.value = '';
  loginError.textContent = '';
  await start();
});

signout.addEventListener('click', () => {
  setKey('');
  showLogin('');
  start();
});

// A notice floats over the page (no layout shift); a click dismisses it.
document.getElementById('notice').addEventListener('click', (event) => {
  event.currentTarget.hidden = true;
});

window.addEventListener('hashchange', () => {
  route();
  view.focus({ preventScroll: true });
});

start();
