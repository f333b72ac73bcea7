"""labelme and mask-folder converters producing kerasseg TFRecords."""
