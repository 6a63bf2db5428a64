// Renders the service's OpenAPI document with Swagger UI. It is a file of
// its own, not an inline script, so that the page's Content-Security-Policy
// needs no 'unsafe-inline'.
'use strict';

(() => {
  const root = document.getElementById('swagger-ui');
  window.ui = SwaggerUIBundle({
    // Relative to the page, so that /docs keeps working behind a proxy
    // that serves the service under a path prefix.
    url: new URL(root.dataset.spec, document.baseURI).href,
    domNode: root,
    deepLinking: true,
    // The default sends the document to validator.swagger.io for a badge:
    // a request off the service, which the policy would refuse anyway.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
})();
