<?xml version="1.0" encoding="UTF-8"?>
<eop:Mask xmlns:eop="http://www.opengis.net/eop/2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:gml="http://www.opengis.net/gml/3.2" gml:id="S2A_OPER_MSK_CLOUDS_SGS__20160112T200000_A002920_T18SVG_B00_MSIL1C">
  <gml:name>MSK_CLOUDS pixels mask from data-strip S2A_OPER_MSK_CLOUDS_SGS__20160112T200000_A002920_T18SVG_B00_MSIL1C</gml:name>
  <gml:boundedBy>
    <gml:Envelope srsName="urn:ogc:def:crs:EPSG:8.7:32618">
      <gml:lowerCorner>448080 4171680</gml:lowerCorner>
      <gml:upperCorner>449280 4172940</gml:upperCorner>
    </gml:Envelope>
  </gml:boundedBy>
  <eop:maskMembers>
    <eop:MaskFeature gml:id="OPAQUE.0">
      <eop:maskType codeSpace="urn:gs2:S2PDGS:maskType">OPAQUE</eop:maskType>
      <eop:extentOf>
        <gml:Polygon gml:id="OPAQUE.0_Polygon">
          <gml:exterior>
            <gml:LinearRing>
              <gml:posList srsDimension="2">448260 4172940 448260 4172880 448140 4172880 448140 4172820 448080 4172820 448080 4172520 448140 4172520 448140 4172460 448260 4172460 448260 4172400 448380 4172400 448380 4172460 448500 4172460 448500 4172520 448560 4172520 448560 4172820 448500 4172820 448500 4172880 448380 4172880 448380 4172940 448260 4172940</gml:posList>
            </gml:LinearRing>
          </gml:exterior>
        </gml:Polygon>
      </eop:extentOf>
    </eop:MaskFeature>
    <eop:MaskFeature gml:id="OPAQUE.1">
      <eop:maskType codeSpace="urn:gs2:S2PDGS:maskType">OPAQUE</eop:maskType>
      <eop:extentOf>
        <gml:Polygon gml:id="OPAQUE.1_Polygon">
          <gml:exterior>
            <gml:LinearRing>
              <gml:posList srsDimension="2">449040 4172100 449040 4172040 448980 4172040 448980 4171980 448920 4171980 448920 4171800 448980 4171800 448980 4171740 449040 4171740 449040 4171680 449220 4171680 449220 4171740 449280 4171740 449280 4172040 449220 4172040 449220 4172100 449040 4172100</gml:posList>
            </gml:LinearRing>
          </gml:exterior>
        </gml:Polygon>
      </eop:extentOf>
    </eop:MaskFeature>
    <eop:MaskFeature gml:id="CIRRUS.0">
      <eop:maskType codeSpace="urn:gs2:S2PDGS:maskType">CIRRUS</eop:maskType>
      <eop:extentOf>
        <gml:Polygon gml:id="CIRRUS.0_Polygon">
          <gml:exterior>
            <gml:LinearRing>
              <gml:posList srsDimension="2">448800 4172940 448800 4172880 448680 4172880 448680 4172820 448620 4172820 448620 4172460 448680 4172460 448680 4172400 448800 4172400 448800 4172340 448980 4172340 448980 4172400 449100 4172400 449100 4172460 449160 4172460 449160 4172820 449100 4172820 449100 4172880 448980 4172880 448980 4172940 448800 4172940</gml:posList>
            </gml:LinearRing>
          </gml:exterior>
          <gml:interior>
            <gml:LinearRing>
              <gml:posList srsDimension="2">448800 4172760 448980 4172760 448980 4172520 448800 4172520 448800 4172760</gml:posList>
            </gml:LinearRing>
          </gml:interior>
        </gml:Polygon>
      </eop:extentOf>
    </eop:MaskFeature>
  </eop:maskMembers>
</eop:Mask>
