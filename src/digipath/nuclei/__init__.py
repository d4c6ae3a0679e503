"""HoVer-Net nuclei: targets, input loading, post-processing, tile merging and export."""
