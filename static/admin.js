// The dashboard works without this file; with it, pages update live and dangerous
// buttons ask first.
(function () {
  'use strict';
  document.addEventListener('submit', function (e) {
    var f = e.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) e.preventDefault();
  });
  document.querySelectorAll('.js-print').forEach(function (b) {
    b.hidden = false;
    b.addEventListener('click', function () { window.print(); });
  });

  var regions = document.querySelectorAll('[data-live-region]');
  if (!window.EventSource || regions.length === 0) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, {cache: 'no-store', credentials: 'same-origin', headers: {'X-Coinpulse-Live': '1'}})
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, 'text/html');
        document.querySelectorAll('[data-live-region]').forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh && fresh.innerHTML !== el.innerHTML) el.replaceWith(fresh);
        });
      })
      .catch(function () {})
      .finally(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var es = new EventSource('/admin/live');
  es.addEventListener('change', refresh);
})();
