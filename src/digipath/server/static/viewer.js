/* The slide viewer: OpenSeadragon with the slide, and a job's output map over it. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("main");
  const message = document.getElementById("viewer-message");
  if (typeof OpenSeadragon === "undefined") {
    if (message) dp.say(message, "OpenSeadragon did not load.", "error");
    return;
  }
  /* OpenSeadragon injects a <style> block (blocked by the Content-Security-Policy) unless an
     element matching style[data-openseadragon-mobile-css] exists: add an inert one, outside
     the HTML namespace so that it is never a style sheet; its rule is in style.css. */
  if (!document.querySelector("style[data-openseadragon-mobile-css]")) {
    const marker = document.createElementNS("urn:x-digipath:inert", "style");
    marker.setAttribute("data-openseadragon-mobile-css", "true");
    document.head.append(marker);
  }
  const viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/vendor/openseadragon/images/",
    tileSources: main.dataset.slideUrl,
    showNavigator: true,
    maxZoomPixelRatio: 2,
  });
  let overlay = null;
  const slider = document.getElementById("overlay-opacity");
  viewer.addHandler("open", () => {
    main.dataset.viewer = "open";
    const url = main.dataset.overlayUrl;
    if (!url) return;
    viewer.addTiledImage({
      tileSource: url,
      opacity: slider ? Number(slider.value) : 0.5,
      success: (event) => {
        overlay = event.item;
        main.dataset.overlay = "open";
      },
      error: () => dp.say(message, "The output map could not be loaded.", "error"),
    });
  });
  viewer.addHandler("open-failed", (event) => {
    dp.say(message, "The slide could not be opened: " + (event.message || "error"), "error");
  });
  if (slider) {
    slider.addEventListener("input", () => {
      if (overlay) overlay.setOpacity(Number(slider.value));
    });
  }
});
