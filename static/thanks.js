// The thanks page follows its payment's stages without reloading; without JavaScript a
// <noscript> refresh does the same.
(function () {
  var list = document.getElementById('steps');
  if (!list || list.dataset.final === 'true') return;
  var steps = list.querySelectorAll('li'), now = document.getElementById('now');
  function poll() {
    fetch(list.dataset.status, {cache: 'no-store'}).then(function (r) { return r.json(); }).then(function (s) {
      for (var i = 0; i < steps.length; i++) steps[i].className = i < s.step ? 'done' : '';
      now.textContent = s.message;
      if (!s.final) setTimeout(poll, 1000);
    }).catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 1000);
})();
